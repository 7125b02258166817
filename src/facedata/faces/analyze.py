"""One facade for "photos in, faces out": decode, detect, align, score quality, embed.

    analyzer = FaceAnalyzer(detect_params, embed_params)      # models load once
    faces = analyzer.analyze([rgb])[0]                        # list[Face], best first, with .embedding

`analyze_files(paths, ...)` runs the same over files on a pool of worker processes (one analyzer per
process, `facedata.faces.pool`) and yields one `FileResult` per path, in order: bad files become a result
with `status="error"` and the reason, and the run goes on. The evaluation commands and the throughput
benchmark use it; the DVC stages use the same detector, alignment, quality and embedder code but write
manifests and crops as they go.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata.faces.detect import Detections, make_detector
from facedata.faces.process import Face, analyze_faces
from facedata.imageio import ImageRejected, read_image_file
from facedata.params import default


class FaceAnalyzer:
    def __init__(self, detect_params: dict, embed_params: dict | None = None, root: str | Path | None = None):
        from facedata.embed import make_embedder, resolve_model_name

        self.params = detect_params
        self.detector = make_detector(detect_params)
        self.embedder = None
        if embed_params is not None:
            self.embedder = make_embedder(
                resolve_model_name(embed_params["model"], root),
                embed_params["device"],
                embed_params["flip"],
                embed_params.get("onnx"),
            )
        if self.embedder is not None:
            self.template, self.crop_size = self.embedder.template, self.embedder.crop_size
        else:
            self.template, self.crop_size = detect_params["align_template"], detect_params["crop_size"]
        self.views = None
        if self.embedder is not None:
            from facedata.faces.views import aligner_for

            self.views = aligner_for(embed_params, self.template, self.crop_size)

    def analyze(self, images: list[np.ndarray], keep_crops: bool = True) -> list[list[Face]]:
        return self.analyze_detections(images, self.detector.detect(images), keep_crops)

    def analyze_detections(
        self, images: list[np.ndarray], dets: list[Detections], keep_crops: bool = True, keep_order: bool = False
    ) -> list[list[Face]]:
        """`analyze` with the detections given (e.g. faces a caller already found); `keep_order` keeps them
        in the given order and all of them, instead of best first and at most `max_faces_per_image`."""
        out = [
            analyze_faces(img, d, self.params, self.template, self.crop_size, keep_order)
            for img, d in zip(images, dets, strict=True)
        ]
        if self.embedder is not None:
            from facedata.faces.views import embed_views

            faces = [f for fs in out for f in fs]
            extra = None
            if self.views is not None:
                detector = self.params["detector"]
                extra = [
                    views
                    for img, fs in zip(images, out, strict=True)
                    for views in self.views.crops(
                        img, np.array([f.box for f in fs]), detector, np.array([f.landmarks for f in fs])
                    )
                ]
            vecs = embed_views(self.embedder, [f.crop for f in faces], extra)
            for f, v in zip(faces, vecs, strict=True):
                f.embedding = v
        if not keep_crops:
            for fs in out:
                for f in fs:
                    f.crop = None
        return out


@dataclass
class FileResult:
    path: str
    status: str  # ok | no_face | error
    reason: str | None = None
    width: int = 0
    height: int = 0
    faces: list[Face] = field(default_factory=list)


def _make_analyzer(detect_params: dict, embed_params: dict | None, root) -> FaceAnalyzer:
    return FaceAnalyzer(detect_params, embed_params, root)


def _analyze_paths(analyzer: FaceAnalyzer, paths: list[str]) -> list[FileResult]:
    results: list[FileResult] = []
    decoded: list[tuple[int, np.ndarray]] = []
    for p in paths:
        try:
            rgb = read_image_file(p, min_side=1).rgb
        except (OSError, ImageRejected) as exc:
            results.append(FileResult(p, "error", str(exc)))
            continue
        results.append(FileResult(p, "ok", width=rgb.shape[1], height=rgb.shape[0]))
        decoded.append((len(results) - 1, rgb))
    if decoded:
        faces = analyzer.analyze([rgb for _, rgb in decoded], keep_crops=False)
        for (i, _), fs in zip(decoded, faces, strict=True):
            results[i].faces = fs
            if not fs:
                results[i].status = "no_face"
    return results


def analyze_files(
    paths: Sequence[str | Path],
    detect_params: dict,
    embed_params: dict | None = None,
    workers: int = default("detect.workers"),
    batch_size: int = default("detect.batch_size"),
    root: str | Path | None = None,
    progress=None,
) -> Iterator[FileResult]:
    """Yield a `FileResult` per path, in order, computed over `workers` processes (0: one per core)."""
    from facedata.faces.pool import map_ordered, worker_count

    device = detect_params.get("device", "auto")
    if embed_params is not None and embed_params.get("device", "auto") != "cpu":
        device = embed_params.get("device", "auto")
    if device == "auto":
        from facedata.device import resolve_device

        device = resolve_device("auto")
    n = worker_count(workers, device)
    paths = [str(p) for p in paths]
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    for results in map_ordered(_make_analyzer, (detect_params, embed_params, root), _analyze_paths, batches, n):
        yield from results
        if progress is not None:
            progress.update(len(results))


def labelled_embeddings(
    paths: Sequence[str | Path],
    detect_params: dict,
    embed_params: dict,
    workers: int = default("detect.workers"),
    progress=None,
) -> Iterator[tuple[FileResult, np.ndarray | None]]:
    """Per path, in order: its result and the embedding of its labelled (centred) face, None when there is none.
    The verification command and the benchmarks measure with it."""
    from facedata.faces.evaluate import labelled_face_index

    for res in analyze_files(paths, detect_params, embed_params, workers, progress=progress):
        i = labelled_face_index(np.array([f.box for f in res.faces]).reshape(-1, 4), res.width, res.height)
        yield res, (res.faces[i].embedding if i >= 0 else None)
