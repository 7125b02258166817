"""People found in video, in the review app: the video index's candidate people (unknown face tracks grouped,
`facedata.video.candidates`) shown as unnamed clusters, and naming one.

Naming is one decision in the `reviews` manifest (action `name_video`, the candidate's track ids, the name),
and, under the same project lock, a video source in params.yaml holding the person's best frames:

    sources:
      videos:
        - {path: ../clips/ep1.mp4, query_name: Ana Lima, frames: [31, 92], tracks: [...],
           regions: [[x, y, w, h], ...], review: 2026...}

so the next `facedata build` ingests exactly those frames through the video source, each as the region round the
person's face (so a neighbour on screen is not filed under the name), with the video's sha256, its frame number,
region and track id in the lineage, filed under the name. Undoing the decision removes the
source, and the next build drops its frames. params.yaml is edited in place (comments and layout kept); commit
it with the reviews manifest.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from facedata import atomic, ids
from facedata.collect.config import check_picked_frames
from facedata.collect.video import face_region
from facedata.review import decisions
from facedata.review.decisions import ReviewError, State
from facedata.video.candidates import Candidate, best_frames, load

PARAMS = "params.yaml"


def candidate_views(index_dir: Path, state: State) -> list[dict]:
    """What the video page shows per candidate person: video, time ranges, track thumbnails, and the name a
    decision gave it (None while unnamed)."""
    out = []
    for c in load(index_dir):
        named = sorted({state.tracks[t]["target"] for t in c.track_ids if t in state.tracks})
        out.append(
            {
                "candidate": c.candidate,
                "video": Path(c.video_path).name,
                "video_path": c.video_path,
                "video_id": c.video_id,
                "spans": [f"{a:.1f}-{b:.1f} s" for a, b in c.spans],
                "seconds": round(c.seconds, 1),
                "n_tracks": len(c.tracks),
                "n_faces": c.n_faces,
                "thumbs": [t["track_id"] for t in c.tracks if t["thumbnail"]][:12],
                "named": named,
            }
        )
    return out


def find(index_dir: Path, candidate: str) -> Candidate:
    for c in load(index_dir):
        if c.candidate == candidate:
            return c
    raise ReviewError(f"no candidate person {candidate!r} in the video index {index_dir}")


def locate_video(root: Path, index_dir: Path, c: Candidate) -> Path:
    """The indexed video file: its recorded path taken as absolute, or relative to the project, the index folder's
    parent or here; the one whose sha256 is the indexed video's."""
    p = Path(c.video_path)
    tries = [p] if p.is_absolute() else [root / p, index_dir.parent / p, Path.cwd() / p]
    for t in tries:
        if t.is_file() and ids.sha256_file(t) == c.video_id:
            return t.resolve()
    raise ReviewError(
        f"the video {c.video_path} of {c.candidate} is not where it was indexed, or has changed since (sha256): "
        "index it again (`facedata index-video`) from the project folder"
    )


def name_candidate(
    root: str | os.PathLike,
    index_dir: str | os.PathLike,
    params: dict,
    candidate: str,
    name: str,
    reviewer: str,
    seen: str | None = None,
    force: bool = False,
    wait: float = 10.0,
) -> tuple[dict, dict]:
    """Name a candidate person: record the decision and add its best frames as a video source (one lock).
    Returns (the reviews row, the params.yaml source entry)."""
    if not isinstance(name, str) or not name.strip():
        raise ReviewError("naming a person found in video needs a name (target)")
    root, index_dir = Path(root).resolve(), Path(index_dir)
    c = find(index_dir, candidate)

    def not_named_yet(state: State) -> None:
        already = sorted({state.tracks[t]["target"] for t in c.track_ids if t in state.tracks})
        if already:
            raise ReviewError(f"{candidate} is already named {', '.join(already)}: undo that decision first")

    not_named_yet(decisions.fold(decisions.read(root)))  # before hashing the video; again under the lock
    v = params["video"]
    picks = best_frames(c.tracks, int(v["name_frames"]), float(v["name_spacing_s"]))
    if not picks:
        raise ReviewError(f"{candidate} has no frames to add")
    video = locate_video(root, index_dir, c)
    entry = {
        "path": os.path.relpath(video, root) if video.anchor == root.anchor else str(video),
        "query_name": " ".join(str(name).split()),
        "frames": [f for f, _ in picks],
        "tracks": [t for _, t in picks],
        "regions": face_regions(c, picks, video),
    }
    check_picked_frames(entry, "the new video source")

    def add_source(row: dict, _: State) -> None:
        entry["review"] = row["review_id"]
        edit_videos(root, lambda videos: videos.append(entry) or True)

    decision = {"action": "name_video", "face_ids": c.track_ids, "target": name}
    before = {t: f"cand:{candidate}" for t in c.track_ids}
    row = decisions.append(
        root, decision, reviewer, seen, force, before, wait=wait, then=add_source, check=not_named_yet
    )
    return row, entry


def face_regions(c: Candidate, picks: list[tuple[int, str]], video: Path) -> list[list[int]]:
    """Per picked frame, the region round the person's face in it (their track's box there): what the build
    stores, so the face named is the image's subject even when others share the frame."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    box_at = {(t["track_id"], int(f)): b for t in c.tracks for f, b in zip(t["frames"], t["boxes"], strict=True)}
    return [list(face_region(box_at[(tid, f)], width, height)) for f, tid in picks]


def drop_undone(root: str | os.PathLike, state: State) -> None:
    """Remove the video sources of name_video decisions that were undone."""

    def drop(videos: list) -> bool:
        undone = [k for k, v in enumerate(videos) if isinstance(v, dict) and v.get("review") in state.undone]
        for k in reversed(undone):
            del videos[k]
        return bool(undone)

    edit_videos(Path(root), drop, only_if=lambda text: "review:" in text)


def edit_videos(root: Path, change, only_if=None) -> None:
    """Apply `change(list of sources.videos entries) -> changed?` to params.yaml in place, keeping its comments
    and layout; written atomically, and only when something changed."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    path = root / PARAMS
    text = path.read_text(encoding="utf-8")
    if only_if is not None and not only_if(text):
        return
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 110
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(text) or CommentedMap()
    sources = doc.setdefault("sources", CommentedMap())
    if sources.get("videos") is None:
        sources["videos"] = CommentedSeq()
    videos = sources["videos"]
    if not change(videos):
        return
    for k, v in enumerate(videos):
        if isinstance(v, dict) and not isinstance(v, CommentedMap):
            videos[k] = _block(v)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    # ruamel re-wraps long flow lists with a space at the end of the line: drop those
    atomic.write_text(path, "\n".join(line.rstrip() for line in buf.getvalue().split("\n")))


def _block(entry: dict):
    """A new source entry as a block mapping with its frame and track lists on one line each."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    out = CommentedMap()
    for k, v in entry.items():
        if isinstance(v, list):
            seq = CommentedSeq(v)
            seq.fa.set_flow_style()
            v = seq
        out[k] = v
    return out
