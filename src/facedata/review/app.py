"""The review web app (`facedata review`): FastAPI + Jinja2 pages over the last build, every decision a POST
that appends to the `reviews` manifest.

Security, for a tool that serves a project's files over HTTP: it binds to 127.0.0.1 unless told otherwise;
requests must name an expected Host (DNS rebinding); every state change is a JSON POST carrying the page's
CSRF token (a random value per app start, compared in constant time) from an expected Origin; images are
served by face or image id only, looked up in the manifests, never by a path from the request; bad input is
a 4xx with a message.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from facedata import manifest
from facedata.project import Project
from facedata.review import decisions, queue, video
from facedata.review.decisions import Conflict, ReviewError

HERE = Path(__file__).parent
ID_CHARS = set("0123456789abcdef")
TRACK_ID = re.compile(r"[0-9a-f]{16}-t[0-9]{5,}")
PAGE = 240  # faces per grid page


def _hex_id(value: str) -> bool:
    return 8 <= len(value) <= 64 and set(value) <= ID_CHARS


class Review:
    """The app's data: the board of the last build (reloaded when the clusters manifest changes) and the
    decisions (read from the manifest on every request, so several reviewers see each other's work)."""

    def __init__(self, root: Path, reviewer: str, model: str | None):
        self.root, self.reviewer, self.model = root, reviewer, model
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._board: queue.Board | None = None

    def board(self) -> queue.Board:
        path = manifest.path_for("clusters", self.root)
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise ReviewError(f"no clusters at {path}: build the project first (`facedata build`)") from exc
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._stamp != stamp or self._board is None:
                self._board = queue.load(self.root, self.model)
                self._stamp = stamp
            return self._board

    def state(self) -> tuple[list[dict], decisions.State]:
        rows = decisions.read(self.root)
        return rows, decisions.fold(rows)


def create_app(
    root: str | os.PathLike,
    reviewer: str,
    allowed_hosts: set[str],
    model: str | None = None,
    lock_wait: float = 10.0,
    video_index: str | os.PathLike | None = None,
):
    """The app; `lock_wait`: seconds a decision waits for a running build's project lock before a 503;
    `video_index`: the `facedata index-video` folder whose candidate people the video page shows (default:
    the project's data/video_index)."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from fastapi.templating import Jinja2Templates

    root = Path(root).resolve()
    index_dir = Path(video_index).resolve() if video_index else Project(root).video_index_dir
    rv = Review(root, reviewer, model)
    token = secrets.token_urlsafe(32)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = FastAPI(title="facedata review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.csrf_token = token

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = request.headers.get("host", "")
        if host not in allowed_hosts:
            return JSONResponse({"error": f"unexpected Host {host!r}"}, status_code=400)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin") or _origin_of(request.headers.get("referer"))
            if origin is None or urlsplit(origin).netloc not in allowed_hosts:
                return JSONResponse({"error": "cross-origin request refused (Origin)"}, status_code=403)
            sent = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(sent.encode(), token.encode()):
                return JSONResponse({"error": "missing or wrong CSRF token; reload the page"}, status_code=403)
        response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def page(request: Request, template: str, status: int = 200, **ctx: Any):
        rows, state = rv.state()
        ctx.update(
            csrf=token,
            reviewer=rv.reviewer,
            seen=rows[-1]["review_id"] if rows else "",
            recent=[r for r in reversed(state.active) if r["reviewer"] == rv.reviewer][:8],
        )
        return templates.TemplateResponse(request, template, ctx, status_code=status)

    def error(request: Request, status: int, message: str):
        if request.method == "POST" or request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return page(request, "error.html", status=status, message=message)

    def tiles(board: queue.Board, cur: queue.Current, rows: list[int]) -> list[dict]:
        return [
            {
                "face": board.face_ids[i],
                "group": cur.group[i],
                "identity": cur.identity[i],
                "doubt": round(float(board.doubt[i]), 2),
                "reviewed": bool(cur.reviewed[i]),
            }
            for i in rows
        ]

    def loaded():
        board = rv.board()
        rows, state = rv.state()
        return board, rows, state, queue.current(board, state)

    @app.exception_handler(ReviewError)
    async def review_error(request: Request, exc: ReviewError):
        return error(request, 400, str(exc))

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        board, rows, state, cur = loaded()
        truth = {f: board.label.get(img) for f, img in zip(board.face_ids, board.image_id, strict=True)}
        gold = decisions.gold_agreement(rows, {f: t for f, t in truth.items() if t})
        return page(
            request,
            "index.html",
            names=queue.names(board, cur),
            groups=queue.unnamed_groups(cur)[:500],
            n_pairs=len(queue.pairs(board, cur)),
            conflicts=decisions.conflicts(rows),
            gold=gold,
            n_faces=len(board),
            n_decisions=len(state.active),
            n_video=unnamed_in_video(state),
        )

    def unnamed_in_video(state) -> int:
        try:
            return sum(not p["named"] for p in video.candidate_views(index_dir, state))
        except manifest.ManifestError:
            return 0  # the video page says why

    @app.get("/name/{name}", response_class=HTMLResponse)
    def name_page(request: Request, name: str, page_no: int = 0):
        board, _, _, cur = loaded()
        if name not in board.names and name not in cur.identity:
            return error(request, 404, f"no identity named {name!r} in this build")
        view = queue.name_view(board, cur, name)
        grid = view["grid"][page_no * PAGE : (page_no + 1) * PAGE]
        return page(
            request,
            "faces.html",
            title=name,
            name=name,
            group="",
            grid=tiles(board, cur, grid),
            doubt=tiles(board, cur, view["doubt"]),
            other=[{**o, "tiles": tiles(board, cur, o["faces"])} for o in view["other"]],
            page_no=page_no,
            more=len(view["grid"]) > (page_no + 1) * PAGE,
        )

    @app.get("/group/{group}", response_class=HTMLResponse)
    def group_page(request: Request, group: str, page_no: int = 0):
        board, _, _, cur = loaded()
        rows = queue.group_view(cur, group)
        if not rows:
            return error(request, 404, f"no cluster {group!r} in this build")
        return page(
            request,
            "faces.html",
            title=f"cluster {group}",
            name=cur.identity[rows[0]] or "",
            group=group,
            grid=tiles(board, cur, rows[page_no * PAGE : (page_no + 1) * PAGE]),
            doubt=[],
            other=[],
            page_no=page_no,
            more=len(rows) > (page_no + 1) * PAGE,
        )

    @app.get("/similar/{face}", response_class=HTMLResponse)
    def similar_page(request: Request, face: str):
        board, _, _, cur = loaded()
        if face not in board.row:
            return error(request, 404, f"no face {face!r} in this build")
        rows = queue.similar(board, face)
        if not rows:
            return error(request, 409, "no embeddings for this build's model: rebuild, then try again")
        return page(request, "faces.html", title="more like this", name="", group="", grid=tiles(board, cur, rows),
                    doubt=[], other=[], page_no=0, more=False)  # fmt: skip

    @app.get("/queue", response_class=HTMLResponse)
    def queue_page(request: Request):
        board, _, _, cur = loaded()
        rows = queue.review_order(board, cur)[:PAGE]
        return page(request, "faces.html", title="next to check", name="", group="", grid=tiles(board, cur, rows),
                    doubt=[], other=[], page_no=0, more=False)  # fmt: skip

    @app.get("/pairs", response_class=HTMLResponse)
    def pairs_page(request: Request):
        board, _, _, cur = loaded()
        pairs = [
            {"a": board.face_ids[i], "b": board.face_ids[j], "doubt": round(d, 2), "b_identity": cur.identity[j]}
            for i, j, d in queue.pairs(board, cur)
        ]
        return page(request, "pairs.html", pairs=pairs)

    @app.get("/face/{face}", response_class=HTMLResponse)
    def face_page(request: Request, face: str):
        board, _, state, cur = loaded()
        if face not in board.row:
            return error(request, 404, f"no face {face!r} in this build")
        i = board.row[face]
        img = _image_row(root, board.image_id[i])
        if img is None:
            return error(request, 404, "the face's source image is not in the images manifest")
        x1, y1, x2, y2 = board.box.get(face, (0, 0, 0, 0))
        w, h = max(1, img["width"]), max(1, img["height"])
        box = {
            "left": 100 * x1 / w,
            "top": 100 * y1 / h,
            "width": 100 * (x2 - x1) / w,
            "height": 100 * (y2 - y1) / h,
        }
        lineage = {k: img[k] for k in manifest.SOURCE_COLUMNS if img.get(k) is not None}
        return page(request, "face.html", face=face, image_id=img["image_id"], box=box, lineage=lineage,
                    build=img["lineage"], identity=cur.identity[i], group=cur.group[i],
                    decision=state.by.get(face), doubt=round(float(board.doubt[i]), 3))  # fmt: skip

    @app.get("/crop/{face}")
    def crop(request: Request, face: str):
        if not _hex_id(face):
            return error(request, 400, "a face id is hexadecimal")
        rel = rv.board().crop_path.get(face)
        return _file(request, root, rel, "crops", error)

    @app.get("/image/{image_id}")
    def image(request: Request, image_id: str):
        if not _hex_id(image_id):
            return error(request, 400, "an image id is hexadecimal")
        img = _image_row(root, image_id)
        return _file(request, root, img["store_path"] if img else None, "images", error)

    @app.get("/api/state")
    def api_state():
        board, rows, state, cur = loaded()
        return {
            "seen": rows[-1]["review_id"] if rows else "",
            "n_decisions": len(state.active),
            "reviewer": rv.reviewer,
            "faces": {
                f: {"group": cur.group[i], "identity": cur.identity[i]} for i, f in enumerate(board.face_ids)
            },
        }

    @app.post("/api/decide")
    async def decide(request: Request):
        body = await json_object(request)
        if not isinstance(body, dict):
            return body

        def record() -> dict:  # in a worker thread: waiting for the project lock must not stall the server
            if body.get("action") == "undo":  # needs no build (a decision on people found in video, say)
                _, state = rv.state()
                d, before = undo(body, state, rv.reviewer), {}
            else:
                board, rows, state, cur = loaded()
                d = expand(body, board, rows, state, cur, rv.reviewer)
                rows_of = [board.row.get(f) for f in d["face_ids"] or []]
                before = {board.face_ids[i]: cur.group[i] for i in rows_of if i is not None}
            seen = body.get("seen") or None
            # undoing the naming of a person found in video also removes the frames' video source
            then = (lambda _, st: video.drop_undone(root, st)) if d["action"] == "undo" else None
            return decisions.append(
                root,
                d,
                rv.reviewer,
                seen=seen,
                force=bool(body.get("force")),
                label_before=before,
                wait=lock_wait,
                then=then,
            )

        return await saved(record, lambda row: {"ok": True, "review": _brief(row)})

    async def json_object(request: Request):
        """The request's JSON object, or the 400 answer saying what is wrong with the body."""
        try:
            body = await request.json()
        except ValueError:
            return error(request, 400, "the body must be JSON")
        return body if isinstance(body, dict) else error(request, 400, "the body must be a JSON object")

    async def saved(record, answer):
        """Run `record` (it waits for the project lock) in a worker thread, so the server keeps serving; a
        conflict with another reviewer is a 409, a busy project a 503."""
        from starlette.concurrency import run_in_threadpool

        from facedata.lock import ProjectBusy

        try:
            out = await run_in_threadpool(record)
        except Conflict as exc:
            return JSONResponse({"error": str(exc), "conflict": [_brief(r) for r in exc.rows]}, status_code=409)
        except ProjectBusy as exc:
            return JSONResponse({"error": f"not saved: {exc}"}, status_code=503)
        return answer(out)

    @app.get("/video", response_class=HTMLResponse)
    def video_page(request: Request):
        _, state = rv.state()
        try:
            people = video.candidate_views(index_dir, state)
        except manifest.ManifestError as exc:
            return error(request, 409, str(exc))
        return page(request, "video.html", people=people, index_dir=str(index_dir))

    @app.get("/video/thumb/{track_id}")
    def video_thumb(request: Request, track_id: str):
        from fastapi.responses import FileResponse

        if not TRACK_ID.fullmatch(track_id):
            return error(request, 400, "a track id is 16 hexadecimal digits, '-t' and a number")
        path = (index_dir / "thumbs" / f"{track_id}.jpg").resolve()
        if not path.is_relative_to(index_dir / "thumbs") or not path.is_file():
            return error(request, 404, f"no thumbnail for track {track_id}")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/name-video")
    async def name_video(request: Request):
        """Name a candidate person found in video: a decision, and its best frames as a video source."""
        body = await json_object(request)
        if not isinstance(body, dict):
            return body
        if not isinstance(body.get("candidate"), str):
            return error(request, 400, 'the body must be {"candidate": ..., "target": NAME}')

        def record() -> tuple[dict, dict]:
            return video.name_candidate(
                root,
                index_dir,
                Project.find(root).params,
                body["candidate"],
                body.get("target"),
                rv.reviewer,
                seen=body.get("seen") or None,
                force=bool(body.get("force")),
                wait=lock_wait,
            )

        return await saved(record, lambda out: {"ok": True, "review": _brief(out[0]), "source": out[1]})

    return app


def expand(body: dict, board: queue.Board, rows: list[dict], state, cur: queue.Current, reviewer: str) -> dict:
    """A posted action in the app's terms (a selection, "its whole cluster", "my last decision") as a
    decision on face ids: checks every face is in this build; fills in what the page implies."""
    action = body.get("action")
    d = {k: body.get(k) for k in ("action", "face_ids", "target", "reason", "other_face_ids", "undoes")}
    if action == "undo":
        return undo(body, state, reviewer)
    faces = d["face_ids"]
    if not isinstance(faces, list) or not all(isinstance(f, str) for f in faces):
        raise ReviewError("face_ids must be a list of face ids")
    unknown = [f for f in [*faces, *(d["other_face_ids"] or [])] if f not in board.row]
    if unknown:
        raise ReviewError(f"unknown face ids (not in this build): {unknown[:3]}")
    groups = sorted({cur.group[board.row[f]] for f in faces})
    if body.get("whole_clusters") or action == "merge":
        faces = sorted({board.face_ids[i] for g in groups for i in queue.members(cur, g)})
        d["face_ids"] = faces
    if action == "merge":
        if len(groups) < 2:
            raise ReviewError("merge needs faces from at least two clusters")
        named = sorted({cur.identity[board.row[f]] for f in faces} - {None})
        if len(named) > 1 and not d["target"]:
            raise ReviewError(
                f"these clusters belong to {', '.join(named)}: move the faces instead, or give a name"
            )
        d["target"] = d["target"] or (named[0] if named else None)
    if action == "split" and not d["other_face_ids"]:
        chosen = set(faces)
        d["other_face_ids"] = (
            sorted({board.face_ids[i] for g in groups for i in queue.members(cur, g)} - chosen) or None
        )
    if action == "reject" and not d["target"]:
        names = sorted({cur.identity[board.row[f]] for f in faces} - {None})
        d["target"] = names[0] if len(names) == 1 else None
        if d["reason"] == "not_this_person" and d["target"]:  # kept apart from the identity's typical faces
            members = [
                i for i, n in enumerate(cur.identity) if n == d["target"] and board.face_ids[i] not in faces
            ]
            members.sort(key=lambda i: cur.score[i])
            d["other_face_ids"] = [board.face_ids[i] for i in members[:20]] or None
    return d


def undo(body: dict, state, reviewer: str) -> dict:
    """A posted undo: of a given decision, or of the reviewer's last one ("last")."""
    d = {"action": "undo", "face_ids": None, "undoes": body.get("undoes")}
    if d["undoes"] == "last":
        mine = [r for r in state.active if r["reviewer"] == reviewer]
        if not mine:
            raise ReviewError("nothing of yours to undo")
        d["undoes"] = mine[-1]["review_id"]
    return d


def _brief(row: dict) -> dict:
    return {k: row[k] for k in ("review_id", "reviewer", "action", "target", "reason", "undoes")} | {
        "time": row["time"].isoformat() if hasattr(row["time"], "isoformat") else row["time"],
        "n_faces": len(row["face_ids"] or []),
    }


def _origin_of(referer: str | None) -> str | None:
    if not referer:
        return None
    parts = urlsplit(referer)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def _image_row(root: Path, image_id: str) -> dict | None:
    import pyarrow.compute as pc

    table = manifest.read("images", root)
    hit = table.filter(pc.equal(table["image_id"], image_id))
    return hit.to_pylist()[0] if hit.num_rows else None


def _file(request, root: Path, rel: str | None, kind: str, error):
    """A stored file by its manifest path, refused unless it resolves inside the project's store."""
    from fastapi.responses import FileResponse

    if not rel:
        return error(request, 404, "no such face or image in this build")
    store = (root / "data" / "store").resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(store) or not path.is_file():
        return error(request, 404, f"the stored {kind[:-1]} file is missing; rerun the build")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


def allowed_hosts(host: str, port: int) -> set[str]:
    hosts = {f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"}
    if host in ("0.0.0.0", "::"):  # every name and address of this machine
        import socket

        name = socket.gethostname()
        try:
            addresses = socket.gethostbyname_ex(name)[2]
        except OSError:
            addresses = []
        hosts |= {f"{h}:{port}" for h in [name, socket.getfqdn(), *addresses]}
    return hosts


def serve(
    root: str | os.PathLike,
    host: str,
    port: int,
    reviewer: str,
    model: str | None,
    hosts: set[str] | None = None,
    video_index: str | os.PathLike | None = None,
) -> None:
    import uvicorn

    app = create_app(root, reviewer, hosts or allowed_hosts(host, port), model, video_index=video_index)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
