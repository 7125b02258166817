"""Index videos: who is on screen when, from decoded frames to manifests, pictures and a JSON summary.

    gallery = facedata.train.identify.from_folder(...) / from_model(...)
    indexer = VideoIndexer(params, gallery)            # models load once
    result = indexer.index("clip.mp4")                 # VideoIndex: tracks, segments, timings
    write_index([result], out_dir, ...)                # video_tracks / video_segments manifests, PNG, JPEGs

The index folder holds `video_tracks.parquet` and `video_segments.parquet` (schemas in `facedata.manifest`),
`thumbs/<track_id>.jpg` and `timelines/<video>.png`. Indexing a video again replaces its rows and nothing else,
so one folder can index a whole archive a video at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata.train.identify import UNKNOWN, Gallery
from facedata.video.decode import VideoInfo, iter_frames, prefetch, probe
from facedata.video.naming import cluster_unknown, name_tracks, track_vector
from facedata.video.segments import Segment, build_segments
from facedata.video.track import Observation, Track, Tracker, TrackSettings, cooccurring

STAGE = "index-video"
TRACKS, SEGMENTS = "video_tracks", "video_segments"


@dataclass
class VideoIndex:
    info: VideoInfo
    tracks: list[Track]
    rows: list[dict]  # video_tracks rows without lineage
    segments: list[Segment]
    seconds_processed: float  # decode + detect + embed + track + identify (models already loaded)
    thumbs: dict[str, np.ndarray] = field(default_factory=dict)  # track_id -> RGB thumbnail
    n_faces: int = 0  # faces tracked
    n_embedded: int = 0  # of which embedded

    @property
    def n_unknown(self) -> int:
        return sum(r["identity"] == UNKNOWN for r in self.rows)


def detect_params(params: dict) -> dict:
    """The `detect` section with the video section's detector, frame size and face cap."""
    v = params["video"]
    return {
        **params["detect"],
        "detector": v["detector"],
        "max_side": v["max_side"],
        "max_faces_per_image": v["max_faces_per_frame"],
    }


def track_settings(v: dict) -> TrackSettings:
    return TrackSettings(
        sure_iou=float(v["sure_iou"]),
        verify_s=float(v["verify_s"]),
        period_s=1.0 / float(v["fps"]),
        embed_per_track=int(v["embed_per_track"]),
        min_iou=float(v["track_min_iou"]),
        link_similarity=float(v["link_similarity"]),
        rejoin_similarity=float(v["rejoin_similarity"]),
        cut_similarity=float(v["cut_similarity"]),
        max_gap_s=float(v["max_gap_s"]),
    )


def track_id(video_id: str, number: int) -> str:
    return f"{video_id[:16]}-t{number:05d}"


class VideoIndexer:
    """Holds the detector and embedder (the gallery's embedding settings) across videos."""

    def __init__(self, params: dict, gallery: Gallery, root: str | Path | None = None) -> None:
        from facedata.faces.analyze import FaceAnalyzer

        self.params, self.gallery = params, gallery
        self.v = params["video"]
        self.analyzer = FaceAnalyzer(detect_params(params), gallery.embed_params, root)

    def _faces(self, frames) -> list[list[Observation]]:
        """Detect in a batch of frames; align and score the faces worth tracking (embedding comes later, only
        where the tracker needs it)."""
        from facedata.faces.detect import Detections
        from facedata.faces.process import analyze_faces

        v, a = self.v, self.analyzer
        rgbs = [f.rgb for f in frames]
        out = []
        for f, d in zip(frames, a.detector.detect(rgbs), strict=True):
            side = np.minimum(d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1])
            m = (d.scores >= v["min_score"]) & (side >= v["min_face_px"])
            d = Detections(d.boxes[m], d.scores[m], d.landmarks[m])
            faces = analyze_faces(f.rgb, d, a.params, a.template, a.crop_size)
            extra = None
            if a.views is not None and faces:
                boxes, lms = np.array([x.box for x in faces]), np.array([x.landmarks for x in faces])
                extra = a.views.crops(f.rgb, boxes, a.params["detector"], lms)
            out.append(
                [
                    Observation(
                        f.index,
                        f.t,
                        f.shot,
                        x.box.astype(np.float32),
                        x.score,
                        x.quality,
                        x.ok,
                        x.crop,
                        extra[k] if extra is not None else None,
                    )
                    for k, x in enumerate(faces)
                ]
            )
        return out

    def _embed(self, obs: list[Observation]) -> None:
        from facedata.faces.views import embed_views

        obs = [o for o in obs if o.embedding is None]
        if not obs:
            return
        extra = [o.views or [] for o in obs] if self.analyzer.views is not None else None
        vecs = embed_views(self.analyzer.embedder, [o.crop for o in obs], extra)
        for o, vec in zip(obs, vecs, strict=True):
            o.embedding = vec
        self.n_embedded += len(obs)

    def index(self, path: str | Path, progress=None, detect_ahead: bool = True) -> VideoIndex:
        """Index one video. `VideoError` when it cannot be opened or holds no frame; a file damaged part way
        is indexed up to the damage and says so in `info.problem`.

        Three threads share the work: frames decode ahead (`prefetch`), the next batch is detected while this
        one's faces are embedded and tracked (`detect_ahead`; torch and OpenCV release the GIL in their
        passes), and results are the same as one after the other: each model pass runs on
        `INFERENCE_THREADS`, held for the whole run so that two passes at once never change each other's."""
        from facedata.device import inference_threads

        t0 = time.perf_counter()
        v = self.v
        info = probe(path)
        if progress is not None and info.header_frames > 0:
            progress.total = int(np.ceil(info.header_frames / info.native_fps * v["fps"]))
        tracker = Tracker(track_settings(v))
        self.n_embedded, n_faces = 0, 0
        frames = iter_frames(info, v["fps"], v["scene_threshold"], v["scene_fps"], v["max_seconds"])
        batches = _batched(prefetch(frames, 2 * v["batch_size"]), int(v["batch_size"]))
        detected = ((batch, self._faces(batch)) for batch in batches)
        with inference_threads("cpu"):
            for batch, faces in prefetch(detected, 1, "facedata-detect") if detect_ahead else detected:
                n_faces += self._feed(tracker, batch, faces, progress)
            result = self._identify(info, tracker.finish(self._embed))
        result.seconds_processed = time.perf_counter() - t0
        result.n_faces, result.n_embedded = n_faces, self.n_embedded
        return result

    def _feed(self, tracker: Tracker, batch, faces: list[list[Observation]], progress) -> int:
        # The faces the tracker will embed whatever happens, embedded together: a recognizer pass always runs
        # FORWARD_BATCH crops (batch-independent results), so one call per frame would mostly embed padding.
        self._embed(must_embed(tracker, faces, tracker.s))
        for frame, obs in zip(batch, faces, strict=True):
            tracker.update(frame.t, frame.shot, obs, self._embed, frame.rgb)
        if progress is not None:
            progress.update(len(batch))
        return sum(len(obs) for obs in faces)

    def _identify(self, info: VideoInfo, tracks: list[Track]) -> VideoIndex:
        v = self.v
        period = 1.0 / float(v["fps"])
        vectors = np.stack([track_vector(t) for t in tracks]) if tracks else np.zeros((0, 1), np.float32)
        co = cooccurring(tracks)
        names, cos, conf = name_tracks(vectors, co, self.gallery, float(v["confidence_slope"]))
        unknown = [k for k, n in enumerate(names) if n == UNKNOWN]
        candidates: dict[int, str] = {}
        if unknown:
            pos = {k: i for i, k in enumerate(unknown)}
            sub = np.array([[pos[a], pos[b]] for a, b in co if a in pos and b in pos], dtype=np.int64)
            labels = cluster_unknown(vectors[unknown], sub.reshape(-1, 2), self.params["cluster"])
            candidates = {
                k: f"{info.video_id[:8]}-p{int(lab):03d}" for k, lab in zip(unknown, labels, strict=True)
            }
        duration = info.seconds
        rows, spans, thumbs = [], [], {}
        for k, tr in enumerate(tracks):
            tid = track_id(info.video_id, tr.number)
            end = min(tr.end + period, duration) if duration else tr.end + period
            rows.append(
                {
                    "track_id": tid,
                    "video_id": info.video_id,
                    "video_path": info.path,
                    "frames": tr.frames,
                    "timestamps": [round(o.t, 6) for o in tr.obs],
                    "boxes": [[round(float(c), 2) for c in o.box] for o in tr.obs],
                    "scores": [float(o.score) for o in tr.obs],
                    "qualities": [float(o.quality) for o in tr.obs],
                    "shots": [int(o.shot) for o in tr.obs],
                    "start": round(tr.start, 6),
                    "end": round(end, 6),
                    "n_faces": len(tr.obs),
                    "identity": names[k],
                    "score": float(cos[k]),
                    "confidence": float(conf[k]),
                    "candidate": candidates.get(k),
                    "vector": [float(c) for c in vectors[k]],
                    "thumbnail": f"thumbs/{tid}.jpg" if tr.thumb is not None else None,
                }
            )
            if tr.thumb is not None:
                thumbs[tid] = tr.thumb
            if names[k] != UNKNOWN:
                spans.append((names[k], tr.start, end, float(conf[k]), tid))
        segments = build_segments(spans, v["merge_gap_s"], v["min_segment_s"], v["min_confidence"])
        return VideoIndex(info, tracks, rows, segments, 0.0, thumbs)


def _batched(items, n: int):
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def must_embed(tracker: Tracker, frames: list[list[Observation]], s: TrackSettings) -> list[Observation]:
    """Faces of these consecutive analysed frames that `Tracker.update` will embed: all but those that might
    continue a track on box overlap alone, which needs a face of the analysed frame just before, in the same
    shot, overlapping by `sure_iou` (a necessary condition, so nothing is embedded that the tracker would not)."""
    from facedata.cluster.constraints import iou

    before = [tr.obs[-1] for tr in tracker.tracks if tr.obs]
    prev = [o for o in before if o.t == max((b.t for b in before), default=None)]
    out = []
    for obs in frames:
        for o in obs:
            near = [p for p in prev if p.shot == o.shot and o.t - p.t <= 1.5 * s.period_s]
            if not near or iou(np.stack([p.box for p in near]), o.box[None]).max() < s.sure_iou:
                out.append(o)
        if obs:
            prev = obs
        elif prev:
            prev = []  # an analysed frame without faces: no face continues from before it on overlap
    return out


def segment_rows(result: VideoIndex) -> list[dict]:
    info = result.info
    return [
        {
            "segment_id": f"{info.video_id[:16]}-{s.identity}-{s.start:.3f}",
            "video_id": info.video_id,
            "video_path": info.path,
            "identity": s.identity,
            "start": round(s.start, 6),
            "end": round(s.end, 6),
            "confidence": float(s.confidence),
            "track_ids": list(s.track_ids),
        }
        for s in result.segments
    ]


def code_hash() -> str:
    """The code version of indexing: a hash of the facedata files this module runs."""
    from facedata.lineage.codedeps import files_hash, import_closure, package_dir

    base = package_dir()
    return files_hash(import_closure([__name__], base), base.parent)[:16]


def lineage_for(params: dict, gallery: Gallery, root: str | Path = ".") -> dict:
    from facedata.embed import embedder_identity
    from facedata.lineage import make_lineage
    from facedata.params import params_hash

    keys = ["video", "embed", "cluster.method", "cluster.threshold", "cluster.k"]
    phash = params_hash({**params, "embed": gallery.embed_params}, keys)
    model = embedder_identity(gallery.embed_params, root)
    return make_lineage(STAGE, phash, root, model, code_hash())


def write_index(results: list[VideoIndex], out_dir: str | Path, lineage: dict) -> dict[str, Path]:
    """Replace the rows of these videos in the index folder's manifests (atomically), write their thumbnails
    and timelines. Returns the paths written."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from facedata import manifest
    from facedata.video.render import write_jpeg

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    ids = pa.array(sorted({r.info.video_id for r in results}), pa.string())
    for name, rows in (
        (TRACKS, [row for r in results for row in r.rows]),
        (SEGMENTS, [row for r in results for row in segment_rows(r)]),
    ):
        target = out / f"{name}.parquet"
        old = read_index(out, name)
        old = old.filter(pc.invert(pc.is_in(old["video_id"], value_set=ids)))
        new = manifest.from_rows(name, [{**row, "lineage": lineage} for row in rows])
        paths[name] = manifest.write(name, manifest.merge(name, old, new), path=target)
    for r in results:
        for tid, rgb in r.thumbs.items():
            write_jpeg(out / "thumbs" / f"{tid}.jpg", rgb)
        paths[f"timeline:{r.info.path}"] = write_timeline(r, out)
    return paths


def read_index(out_dir: str | Path, name: str = TRACKS):
    """One of an index folder's manifests (`video_tracks` or `video_segments`); empty when not written yet."""
    from facedata import manifest

    target = Path(out_dir) / f"{name}.parquet"
    return manifest.conform(name, _read(target), fill_missing=True) if target.exists() else manifest.empty(name)


def _read(path: Path):
    import pyarrow.parquet as pq

    from facedata.manifest import ManifestError

    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file: say which and how to fix
        raise ManifestError(f"{path} is not readable Parquet ({exc}); move it away to start a new index") from exc


def timeline_path(result: VideoIndex, out: Path) -> Path:
    return out / "timelines" / f"{Path(result.info.path).stem}-{result.info.video_id[:8]}.png"


def write_timeline(result: VideoIndex, out: Path) -> Path:
    from facedata.video.render import timeline_png

    named = sorted({r["identity"] for r in result.rows if r["identity"] != UNKNOWN})
    rows = []
    for ident in [*named, UNKNOWN]:
        segs = [(s.start, s.end, s.confidence) for s in result.segments if s.identity == ident]
        tracks = [(r["start"], r["end"]) for r in result.rows if r["identity"] == ident]
        if segs or tracks:
            rows.append((ident, segs, tracks))
    path = timeline_path(result, out)
    timeline_png(path, Path(result.info.path).name, result.info.seconds, rows, result.info.cuts)
    return path


def summary(results: list[VideoIndex]) -> dict:
    """The `--json` document: every kept segment, and counts and timings over all videos."""
    return {
        "segments": [
            {
                "video": r.info.path,
                "identity": s.identity,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "confidence": round(float(s.confidence), 4),
                "track_ids": list(s.track_ids),
            }
            for r in results
            for s in r.segments
        ],
        "tracks": sum(len(r.rows) for r in results),
        "unknown_tracks": sum(r.n_unknown for r in results),
        "seconds_processed": round(sum(r.seconds_processed for r in results), 3),
        "video_seconds": round(sum(r.info.seconds for r in results), 3),
        "videos": [
            {
                "video": r.info.path,
                "video_id": r.info.video_id,
                "seconds": round(r.info.seconds, 3),
                "tracks": len(r.rows),
                "unknown_tracks": r.n_unknown,
                "candidates": len({row["candidate"] for row in r.rows if row["candidate"]}),
                "problem": r.info.problem,
            }
            for r in results
        ],
    }
