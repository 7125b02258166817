"""Alignment views: one face embedded under several independent landmark estimates, the vectors averaged.

A 5-point alignment is only as good as its five points, and every landmark estimator misplaces them in its own
way. `embed.align_views` names extra estimators; each face is then also aligned with theirs and embedded, and
the unit vectors of all views (each already flip-averaged when `embed.flip` is on) are averaged. Sources:

- `retinaface`, `yunet`, `mtcnn`: that detector runs on the image; its detection overlapping the face
  (IoU >= 0.5) gives the landmarks, aligned with that detector's template. No such detection: no view from it.
  The detector that found the face already gave the base view, so naming it again adds nothing.
- `dlib5`: dlib's 5-point shape predictor inside the face's box, then dlib's own chip (`get_face_chip`, padding
  0.25): the exact geometry dlib's ResNet was trained on, so only for the `dlib150` template.

The extra detectors run with their default settings on `embed.device`: they only re-locate the landmarks of
faces the `detect` stage already found and kept.

`embed.jitter: N` adds N views of the face's own landmarks aligned to slightly perturbed templates: rotated up
to 3 degrees, scaled by 0.97-1.03, shifted up to 2% of the crop side. It is dlib's `num_jitters` test-time
augmentation (`dlib.jitter_image`: the same ranges, on the chip), made deterministic: the perturbations are a
fixed sequence, and N takes its first N, so the same face always gets the same vector. Each view is cut from the
source image, not resampled from the chip, whose edges a rotation or shift would have to invent.

Both trade time for accuracy: a detector pass per source and one embedding per view, so they are off by
default. What they are worth, and what they cost, is measured on LFW pairs that share no image with the
benchmark pairs: BENCHMARKS.md, "Alignment views" and "Jitter".
"""

from __future__ import annotations

import numpy as np

from facedata.faces.align import align, similarity_transform, warp
from facedata.faces.align import template as template_points
from facedata.params import SPEC, default, defaults


def _perturbations(n: int, seed: int = 12345) -> tuple[tuple[float, float, float, float], ...]:
    """(rotation in degrees, scale, x shift, y shift as a fraction of the side) per jitter, always the same."""
    rng = np.random.default_rng(seed)
    return tuple(
        (rng.uniform(-3, 3), rng.uniform(0.97, 1.03), rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02))
        for _ in range(n)
    )


JITTERS = _perturbations(32)  # embed.jitter's largest value


def jittered(points: np.ndarray, size: int, k: int) -> np.ndarray:
    """Template `points` (for a `size` crop) under the k-th perturbation, about the crop centre."""
    deg, scale, dx, dy = JITTERS[k]
    t = np.deg2rad(deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * scale
    c = size / 2.0
    return (np.asarray(points, dtype=np.float64) - c) @ rot.T + c + np.array([dx, dy]) * size


def check_sources(sources: list[str]) -> None:
    spec = SPEC["embed.align_views"]
    if not isinstance(sources, list | tuple) or not spec.check(sources):
        raise ValueError(f"embed.align_views must be {spec.rule}, got {sources!r}")


class ViewAligner:
    """Extra aligned crops of already-detected faces: one per landmark source that finds the face, and
    `jitter` perturbed alignments of the face's own landmarks."""

    def __init__(
        self,
        sources: list[str],
        template: str,
        size: int,
        device: str = default("embed.device"),
        jitter: int = default("embed.jitter"),
    ) -> None:
        check_sources(sources)
        if isinstance(jitter, bool) or not isinstance(jitter, int) or not SPEC["embed.jitter"].check(jitter):
            raise ValueError(f"embed.jitter must be {SPEC['embed.jitter'].rule}, got {jitter!r}")
        if "dlib5" in sources and template != "dlib150":
            raise ValueError(
                "embed.align_views: dlib5 makes dlib's own face chip, which only fits the dlib150 template "
                f"(embed.model dlib-resnet); this model expects {template}. Remove dlib5 from the list."
            )
        self.sources = list(sources)
        self.template, self.size, self.device, self.jitter = template, size, device, jitter
        # loaded on first use: a source equal to the faces' own detector is never run, so never loaded
        self._detectors: dict[str, object] = {}
        self.shape5 = None
        if "dlib5" in sources:
            import dlib

            from facedata import models

            self.shape5 = dlib.shape_predictor(str(models.locate_file("dlib-shape5")))

    def _detector(self, name: str):
        from facedata.faces.detect import make_detector

        if name not in self._detectors:
            settings = {**defaults()["detect"], "detector": name, "device": self.device}
            self._detectors[name] = make_detector(settings)
        return self._detectors[name]

    def crops(
        self, rgb: np.ndarray, boxes: np.ndarray, detector: str, landmarks: np.ndarray | None = None
    ) -> list[list[np.ndarray]]:
        """For each face (`boxes` and 5-point `landmarks` found by `detector` in `rgb`), its crops from the
        other sources, then its jittered crops (which need the landmarks)."""
        from facedata.faces.evaluate import iou

        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out: list[list[np.ndarray]] = [[] for _ in boxes]
        if not len(boxes):
            return out
        if self.jitter and landmarks is None:
            raise ValueError("embed.jitter needs each face's landmarks")
        for name in self.sources:
            if name in ("dlib5", detector):
                continue
            found = self._detector(name).detect([rgb])[0]
            if not len(found):
                continue
            for i, box in enumerate(boxes):
                overlap = iou(found.boxes.astype(np.float64), box)
                j = int(np.argmax(overlap))
                if overlap[j] >= 0.5:
                    out[i].append(align(rgb, found.landmarks[j], self.template, self.size, name)[0])
        if self.shape5 is not None:
            for i, box in enumerate(boxes):
                out[i].append(self._dlib_chip(rgb, box))
        if self.jitter:
            base = template_points(self.template, self.size, detector)
            for i, points in enumerate(np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)):
                for k in range(self.jitter):
                    m = similarity_transform(points, jittered(base, self.size, k))
                    out[i].append(warp(rgb, m, self.size))
        return out

    def _dlib_chip(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        import dlib

        rgb = np.ascontiguousarray(rgb)
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        chip = dlib.get_face_chip(rgb, self.shape5(rgb, rect), size=self.size, padding=0.25)
        return np.asarray(chip, dtype=np.uint8)


def aligner_for(embed_params: dict, template: str, size: int) -> ViewAligner | None:
    """The `ViewAligner` the embed params ask for (`align_views`, `jitter`), or None when they ask for none."""
    sources, jitter = embed_params.get("align_views") or [], embed_params.get("jitter", 0)
    if not sources and not jitter:
        return None
    return ViewAligner(sources, template, size, embed_params.get("device", "auto"), jitter)


def embed_views(embedder, base: list[np.ndarray], extra: list[list[np.ndarray]] | None) -> np.ndarray:
    """Unit vectors of the faces whose base crops are `base`, each averaged with its `extra` views' vectors."""
    from facedata.embed import l2_normalize

    if not extra:
        return embedder.embed(base)
    flat = list(base) + [c for views in extra for c in views]
    vecs = embedder.embed(flat)
    out = vecs[: len(base)].astype(np.float64)
    k = len(base)
    for i, views in enumerate(extra):
        out[i] += vecs[k : k + len(views)].sum(axis=0)
        k += len(views)
    return l2_normalize(out)
