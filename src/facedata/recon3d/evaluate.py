"""AFLW2000-3D evaluation: NME of the 68 landmarks, 2D, with our own detector choosing the crop.

NME (%) = mean point-to-point distance / sqrt(w * h) of the ground-truth landmark box x 100, the metric
3DDFA_V2 publishes for all 2,000 images. (The 8 images in ../shared are the ones the crop recipe was chosen
on: a figure on them is a development number; see BENCHMARKS.md before comparing.) Images are binned by the
ground truth's absolute yaw: [0, 30), [30, 60), [60, 90]. When the detector finds several faces the primary
one is used (largest, nearest the centre: never the ground truth); an image where it finds none counts in
`n_failed` and is left out of the mean.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

YAW_BINS = ((0, 30, "[0,30)"), (30, 60, "[30,60)"), (60, 91, "[60,90]"))


class DatasetError(ValueError):
    """The AFLW2000-3D folder is missing or holds no usable image/.mat pairs."""


@dataclass(frozen=True)
class Sample:
    name: str
    image_path: Path
    landmarks: np.ndarray  # (68, 2) ground truth x, y
    yaw: float  # degrees, absolute


def load_aflw2000(directory: str | Path) -> list[Sample]:
    """`imageNNNNN.jpg` + `imageNNNNN.mat` pairs (official `pt3d_68`, `Pose_Para`)."""
    import scipy.io

    root = Path(directory)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; pass the AFLW2000 folder holding image*.jpg + image*.mat")
    samples = []
    for img in sorted(root.glob("image*.jpg")):
        mat = img.with_suffix(".mat")
        if not mat.exists():
            continue
        m = scipy.io.loadmat(mat)
        if "pt3d_68" not in m or "Pose_Para" not in m:
            raise DatasetError(f"{mat} has no pt3d_68 / Pose_Para: not an AFLW2000-3D annotation")
        yaw = abs(float(np.degrees(m["Pose_Para"][0, 1])))
        samples.append(Sample(img.stem, img, np.asarray(m["pt3d_68"][:2].T, np.float64), yaw))
    if not samples:
        raise DatasetError(f"no image*.jpg with a matching .mat in {root}")
    return samples


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """NME in % of (68, 2+) predictions against (68, 2) ground truth."""
    lo, hi = gt.min(axis=0), gt.max(axis=0)
    norm = float(np.sqrt(np.prod(hi - lo)))
    return float(np.mean(np.linalg.norm(pred[:, :2] - gt, axis=1)) / norm * 100)


def yaw_bin(yaw: float) -> str:
    for lo, hi, name in YAW_BINS:
        if lo <= yaw < hi:
            return name
    return YAW_BINS[-1][2]


def primary(boxes: np.ndarray, width: int, height: int) -> int:
    """Index of the image's main face: the largest box, discounted by its distance from the centre."""
    b = np.asarray(boxes, dtype=np.float64)
    size = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    centre = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
    off = np.linalg.norm((centre - [width / 2, height / 2]) / [width, height], axis=1)
    return int(np.argmax(size * (1 - off)))


def evaluate(samples: list[Sample], detector, regressor, progress=None) -> dict:
    """Detect, regress and score every sample. `progress` wraps the sample iterable (e.g. tqdm)."""
    from facedata.imageio import ImageRejected, read_image_file

    per_image, failed, ms = [], [], []
    it = progress(samples) if progress else samples
    for s in it:
        try:
            rgb = read_image_file(s.image_path).rgb
        except (OSError, ImageRejected) as exc:
            failed.append({"image": s.name, "reason": f"unreadable: {exc}"})
            continue
        dets = detector.detect([rgb])[0]
        if len(dets) == 0:
            failed.append({"image": s.name, "reason": "no face detected"})
            continue
        box = dets.boxes[primary(dets.boxes, rgb.shape[1], rgb.shape[0])]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        t0 = time.perf_counter()
        fit = regressor.fit([bgr], [box[None]])[0][0]
        ms.append((time.perf_counter() - t0) * 1000)
        per_image.append(
            {
                "image": s.name,
                "yaw": round(s.yaw, 2),
                "bin": yaw_bin(s.yaw),
                "nme": nme(fit.landmarks, s.landmarks),
            }
        )
    values = [r["nme"] for r in per_image]
    by_yaw = {}
    for _, _, name in YAW_BINS:
        vals = [r["nme"] for r in per_image if r["bin"] == name]
        by_yaw[name] = round(float(np.mean(vals)), 4) if vals else None
    binned = [v for v in by_yaw.values() if v is not None]
    return {
        "nme_mean": round(float(np.mean(values)), 4) if values else None,
        "nme_by_yaw": by_yaw,
        "nme_balanced": round(float(np.mean(binned)), 4) if binned else None,
        "n_images": len(samples),
        "n_evaluated": len(per_image),
        "n_failed": len(failed),
        "ms_per_face": round(float(np.median(ms)), 3) if ms else None,
        "per_image": [{**r, "nme": round(r["nme"], 4)} for r in per_image],
        "failed": failed,
    }
