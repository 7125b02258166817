"""Who is in a photo, open-set: every face found is named after the identity whose prototype it is closest to
(cosine), or `unknown` when even that is under the threshold.

Two sources of identities:
- a trained model (`model.pt` of stage `train`): its prototypes, its threshold (chosen at training time so a
  set share of strangers gets through), and for head mode its projection of the embedding model's vectors;
- a gallery folder `<identity>/<photos>`: each identity's mean embedding (the primary face of each photo),
  the embedding model's own distance, and `identify.gallery_threshold`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNKNOWN = "unknown"


class IdentifyError(RuntimeError):
    """A gallery or model cannot be used (no identity with a usable face, a model for another embedder...)."""


@dataclass
class Gallery:
    classes: list[str]
    prototypes: np.ndarray  # (n_classes, d), unit rows
    threshold: float  # cosine a face needs to be named
    embed_params: dict  # how faces are embedded before `transform`
    transform: Callable[[np.ndarray], np.ndarray] | None = None  # the model's projection (head mode)
    source: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. gallery photos without a usable face

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Cosine of every face vector (rows) to every identity's prototype (columns)."""
        z = np.asarray(vectors, dtype=np.float32)
        if not self.classes:
            return np.zeros((len(z), 0), np.float32)
        if self.transform is not None:
            z = self.transform(z)
        return z @ self.prototypes.T

    def name(self, vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(identity or 'unknown', cosine of the best match) per face vector."""
        if len(vectors) == 0:
            return [], np.zeros(0)
        if not self.classes:
            return [UNKNOWN] * len(vectors), np.zeros(len(vectors))
        scores = self.scores(vectors)
        best, score = scores.argmax(axis=1), scores.max(axis=1)
        return [
            self.classes[b] if s >= self.threshold else UNKNOWN for b, s in zip(best, score, strict=True)
        ], score


def from_model(path: str | Path, embed_defaults: dict, threshold: float | None = None) -> Gallery:
    """The gallery of a trained model. `embed_defaults` supplies run-time settings (device, batch size)."""
    import torch

    from facedata.train.export import ONNX, load

    net, meta = load(path)
    protos = torch.nn.functional.normalize(net.prototypes.detach(), dim=1).numpy()
    embed = {**embed_defaults, **meta["embed"]}
    transform = None
    if meta["mode"] == "finetune":
        onnx = Path(path).with_name(ONNX)
        if not onnx.is_file():
            raise IdentifyError(f"{onnx} is missing: the fine-tuned model is run through its ONNX export")
        embed.update(model=f"onnx:{onnx}", onnx=meta["onnx_input"], align_views=[], jitter=0, flip=True)
    elif meta["projection"] != "none":

        def transform(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return net.embed(torch.from_numpy(x)).numpy()

    t = meta["threshold"] if threshold is None else threshold
    return Gallery(list(meta["classes"]), protos, float(t), embed, transform, f"model {path}")


def from_folder(
    folder: str | Path,
    detect: dict,
    embed: dict,
    threshold: float,
    workers: int = 0,
    progress=None,
    allow_empty: bool = False,
) -> Gallery:
    """A gallery from `<identity>/<photos>`: the mean direction of each identity's primary usable faces.
    `allow_empty`: a folder without identities gives a gallery naming nobody (video indexing then only tracks
    and groups people) instead of an error."""
    from facedata.faces.analyze import analyze_files
    from facedata.faces.evaluate import IMAGE_EXTENSIONS
    from facedata.train.heads import class_means

    folder = Path(folder)
    people = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    photos = [(p.name, f) for p in people for f in sorted(p.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not photos and allow_empty and not people:
        return Gallery([], np.zeros((0, 0), np.float32), float(threshold), embed, None, f"empty gallery {folder}")
    if not photos:
        raise IdentifyError(f"gallery {folder} has no <identity>/<photos>: expected one sub-folder per person")
    vectors: dict[str, list[np.ndarray]] = {}
    notes = []
    results = analyze_files([f for _, f in photos], detect, embed, workers, progress=progress)
    for (name, f), res in zip(photos, results, strict=True):
        face = next((x for x in res.faces if x.is_primary and x.ok), None)
        if face is None:
            notes.append(f"{f}: {res.reason or 'no usable face'}; left out of the gallery")
            continue
        vectors.setdefault(name, []).append(face.embedding)
    if not vectors:
        raise IdentifyError(f"no photo in gallery {folder} has a usable face")
    for p in people:
        if p.name not in vectors:
            notes.append(f"{p.name}: no photo with a usable face; this identity cannot be recognised")
    classes = sorted(vectors)
    x = np.concatenate([np.stack(vectors[c]) for c in classes])
    y = np.concatenate([np.full(len(vectors[c]), i) for i, c in enumerate(classes)])
    protos = class_means(x, y, np.ones(len(y)), len(classes))
    return Gallery(classes, protos, float(threshold), embed, None, f"gallery {folder}", notes)


def identify_files(
    gallery: Gallery, paths: Sequence[str | Path], detect: dict, workers: int = 0, root=None, progress=None
) -> Iterator[dict]:
    """One result per path, in order: `{"path", "status", "reason", "faces": [{"box", "identity",
    "confidence", "quality_ok"}]}`. `confidence` is the cosine of the best match (clipped to [0, 1]); faces the
    quality filters flag are still named (`quality_ok` false says to trust them less)."""
    from facedata.faces.analyze import analyze_files

    for res in analyze_files(list(paths), detect, gallery.embed_params, workers, root=root, progress=progress):
        names, scores = gallery.name(np.array([f.embedding for f in res.faces], dtype=np.float32))
        faces = [
            {
                "box": [round(float(v), 1) for v in f.box],
                "identity": n,
                "confidence": round(float(np.clip(s, 0.0, 1.0)), 4),
                "quality_ok": f.ok,
            }
            for f, n, s in zip(res.faces, names, scores, strict=True)
        ]
        yield {
            "path": res.path,
            "status": "error" if res.status == "error" else "ok",
            "reason": res.reason,
            "faces": faces,
        }
