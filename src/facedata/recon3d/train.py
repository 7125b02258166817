"""`facedata train 3d`: fine-tune the 3DMM regressor on the dataset's own faces, with pseudo-labels from the
dense fits of stage `reconstruct3d` (the 68 landmarks of each fitted SFM mesh, projected into the photo).

Why this helps: the stage's labels come from the full test-time recipe (refined, upright, flip-averaged crops)
and a shape-model fit that keeps them anatomically plausible; training the single-pass network towards them
on the kind of photos the project actually has (its cast, its cameras) distils that recipe into the network.

- Loss: mean absolute distance, in crop pixels, between the 68 2D landmarks the network's parameters give
  (through the 3DDFA sparse bases, differentiable) and the labels; plus `teacher_weight` x the squared
  distance of the normalised parameters to the starting network's, so shape and expression stay plausible
  where the 2D landmarks say little (depth).
- Optimiser: SGD with momentum and a small learning rate. The starting network is already close to the
  labels, and Adam's first steps (about `lr` on every weight whatever the gradient) knocked it far
  off in our trials; SGD descends smoothly from there.
- Augmentation: crops from the labels with random shift/scale (`jitter`), random mirroring.
- Batch norm statistics stay frozen (small batches of one domain would skew them).
- Determinism and resuming: the batch and augmentation of step k come from a generator seeded with
  (seed, k), and a checkpoint (weights, optimiser, step, history) is written atomically every
  `checkpoint_every` steps, so a killed run resumed from its checkpoint ends with the same weights as an
  uninterrupted one.
- Held-out faces: whole photos (all frames of a video count as one photo) are held out by a hash, so no face
  the network is scored on, nor a near-identical frame of it, is ever trained on. The metrics give the mean
  NME against the labels on those held-out faces and on (up to 256 of) the training faces, before and after:
  the first says whether it generalises, the second only whether it fits. People held out entirely and
  AFLW2000-3D ground truth are measured by `python -m benchmarks 3d -- --only train` (BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facedata import atomic
from facedata.params import default, settings
from facedata.recon3d import bfm, crop

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "train3d.json"


class TrainError(RuntimeError):
    """Training cannot start (no labelled faces, a checkpoint from another configuration...)."""


@dataclass(frozen=True)
class Train3DConfig:
    steps: int = default("train3d.steps")
    batch_size: int = default("train3d.batch_size")
    lr: float = default("train3d.lr")
    teacher_weight: float = default("train3d.teacher_weight")
    jitter: float = default("train3d.jitter")
    val_fraction: float = default("train3d.val_fraction")
    checkpoint_every: int = default("train3d.checkpoint_every")
    seed: int = default("train3d.seed")
    device: str = default("train3d.device")
    threads: int = default("train3d.threads")
    init_weights: str = ""  # '' = the 3DDFA_V2 mb05 weights

    @classmethod
    def from_params(cls, p: dict, **override) -> Train3DConfig:
        return settings(cls, p, **override)

    def identity(self) -> dict:
        """What must match for a checkpoint to be resumed (everything except the step count and device)."""
        d = asdict(self)
        for k in ("steps", "device", "threads"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class Sample:
    face_id: str
    image_path: Path
    label: np.ndarray  # (68, 2) photo pixels
    group: str = ""  # faces held out together: one photo, or every frame of one video ("" = the face alone)


def load_samples(root: str | Path) -> list[Sample]:
    """Faces with status ok and a dense-fit label from the project's meshes manifest, with their stored photo."""
    from facedata import manifest

    root = Path(root)
    meshes = manifest.read("meshes", root).to_pylist()
    images = {r["image_id"]: r for r in manifest.read("images", root, missing_ok=True).to_pylist()}
    if not images:
        images = {r["image_id"]: r for r in manifest.read("dataset", root).to_pylist()}
    out = []
    for r in meshes:
        if r["kind"] != "face" or r["status"] != "ok" or not r["fit_landmarks68"] or r["image_id"] not in images:
            continue
        label = np.asarray(r["fit_landmarks68"], dtype=np.float64).reshape(68, 2)
        if np.isfinite(label).all():
            image = images[r["image_id"]]
            group = f"video:{image['video_id']}" if image.get("video_id") else f"image:{r['image_id']}"
            out.append(Sample(r["face_id"], root / image["store_path"], label, group))
    return sorted(out, key=lambda s: s.face_id)


def split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Held-out faces: whole groups (a photo, or a video's frames) chosen by a hash of (seed, group), stable
    when faces are added."""

    def u(s: Sample) -> float:
        h = hashlib.sha256(f"{seed}\x1f{s.group or s.face_id}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    val = [s for s in samples if u(s) < val_fraction]
    train = [s for s in samples if u(s) >= val_fraction]
    if not train:
        train, val = samples, []
    return train, val


class _Images:
    """Decoded photos (BGR), a small LRU so each photo is decoded about once."""

    def __init__(self, size: int = 256):
        self.size = size
        self.cache: OrderedDict[Path, np.ndarray] = OrderedDict()

    def get(self, path: Path) -> np.ndarray:
        from facedata.imageio import read_image_file

        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        bgr = np.ascontiguousarray(read_image_file(path, min_side=1).rgb[:, :, ::-1])
        self.cache[path] = bgr
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return bgr


def photo_to_frame(pts: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """(n, 68, 2) photo points -> (n, 2, 68) in the crop frame the network predicts in (inverse of
    `crop.to_image` for x and y)."""
    c = np.atleast_2d(crops)
    p = crop.rotate(np.asarray(pts, dtype=np.float64), c[:, :2], -c[:, 3])
    s = c[:, 2] / crop.SIZE
    x = (p[..., 0] - (c[:, 0:1] - c[:, 2:3] / 2)) / s[:, None] + 1
    y = crop.SIZE - (p[..., 1] - (c[:, 1:2] - c[:, 2:3] / 2)) / s[:, None]
    return np.stack([x, y], axis=1)


def make_batch(samples: list[Sample], images: _Images, rng: np.random.Generator | None, jitter: float):
    """Network inputs (n, 3, 120, 120) and crop-frame targets (n, 2, 68); augmented when `rng` is given."""
    inputs = np.zeros((len(samples), 3, crop.SIZE, crop.SIZE), np.float32)
    targets = np.zeros((len(samples), 2, 68))
    for i, s in enumerate(samples):
        c = crop.from_landmarks(s.label[None])[0]
        flip = False
        if rng is not None:
            c[0] += rng.uniform(-jitter, jitter) * c[2]
            c[1] += rng.uniform(-jitter, jitter) * c[2]
            c[2] *= 1 + rng.uniform(-jitter, jitter)
            flip = bool(rng.random() < 0.5)
        img = images.get(s.image_path)
        inputs[i] = crop.to_input(crop.warp(img, c[None], flip=flip))[0]
        t = photo_to_frame(s.label[None], c[None])[0]
        if flip:
            t = np.stack([crop.SIZE + 1 - t[0], t[1]])[:, bfm.FLIP_68]
        targets[i] = t
    return inputs, targets


class _TorchBases:
    def __init__(self, device):
        import torch

        b = bfm.load_bases()
        f = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        self.mean, self.std = f(b.mean), f(b.std)
        self.u, self.w_shp, self.w_exp = f(b.u), f(b.w_shp), f(b.w_exp)

    def landmarks_xy(self, out):
        """Normalised network output (n, 62) -> (n, 2, 68) crop-frame x, y (differentiable)."""
        import torch

        p = out * self.std + self.mean
        cam = p[:, :12].reshape(-1, 3, 4)
        shape = self.u[None] + torch.einsum("cpk,nk->ncp", self.w_shp, p[:, 12:52])
        shape = shape + torch.einsum("cpk,nk->ncp", self.w_exp, p[:, 52:62])
        pts = cam[:, :, :3] @ shape + cam[:, :, 3:]
        return pts[:, :2]


def nme_frame(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean NME (%) of (n, 2, 68) crop-frame predictions, normalised by the target landmark box."""
    vals = []
    for p, t in zip(pred, target, strict=True):
        size = np.sqrt(np.prod(t.max(axis=1) - t.min(axis=1)))
        vals.append(np.mean(np.linalg.norm(p - t, axis=0)) / size * 100)
    return float(np.mean(vals)) if vals else float("nan")


def train(
    root: str | Path,
    out_dir: str | Path,
    cfg: Train3DConfig,
    resume: bool = True,
    max_faces: int | None = None,
    progress=None,
    log=print,
) -> dict:
    """Fine-tune on the project's labelled faces, holding out `cfg.val_fraction` of its photos; returns the
    metrics written to `out_dir/train3d.json`. `progress(total)` may return a tqdm-like bar."""
    samples = load_samples(root)
    if max_faces:
        samples = samples[:max_faces]
    if len(samples) < 2:
        raise TrainError(
            f"{len(samples)} labelled face(s) in the meshes manifest of {root}: run the pipeline through stage "
            "reconstruct3d first (`dvc repro reconstruct3d` or `facedata build`)"
        )
    train_set, val_set = split(samples, cfg.val_fraction, cfg.seed)
    return train_samples(train_set, val_set, out_dir, cfg, resume, progress, log)


def train_samples(
    train_set: list[Sample],
    val_set: list[Sample],
    out_dir: str | Path,
    cfg: Train3DConfig,
    resume: bool = True,
    progress=None,
    log=print,
) -> dict:
    """Fine-tune on `train_set`; `val_set` (never trained on) is only scored. Returns the metrics."""
    import torch

    from facedata.device import resolve_device

    if not train_set:
        raise TrainError("no faces left to train on (every face is held out: lower train3d.val_fraction)")
    device = resolve_device(cfg.device)
    threads_before = torch.get_num_threads()
    try:
        return _train(Path(out_dir), cfg, resume, train_set, val_set, device, progress, log)
    finally:
        torch.set_num_threads(threads_before)


def _train(out: Path, cfg: Train3DConfig, resume: bool, train_set, val_set, device: str, progress, log) -> dict:
    import torch

    from facedata.recon3d.mobilenet import load_checkpoint
    from facedata.recon3d.regress import default_weights

    if device == "cpu":
        # depth-wise convolutions gain little from threads, and on a busy machine torch's spinning worker
        # threads stall: one step took 5-7 s with 2 threads and 0.07 s with 1 on the 2-core machine here
        torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    init = Path(cfg.init_weights) if cfg.init_weights else default_weights()
    net = load_checkpoint(init, device)
    teacher = load_checkpoint(init, device)
    for q in teacher.parameters():
        q.requires_grad_(False)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9)
    bases = _TorchBases(device)
    history: list[dict] = []
    start = 0
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt.get("config") != cfg.identity():
            raise TrainError(
                f"{ckpt_path} was made with another configuration ({ckpt.get('config')}); use a new --out folder "
                "or --no-resume to start over"
            )
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start, history = int(ckpt["step"]), list(ckpt["history"])
        log(f"resuming from step {start} ({ckpt_path})")
    images = _Images()
    # scored without augmentation: every held-out face, and a fixed subset of the training faces
    seen = [train_set[i] for i in sorted(np.random.default_rng(cfg.seed).permutation(len(train_set))[:256])]
    scored = {"val": make_batch(val_set, images, None, 0.0) if val_set else None}
    scored["train"] = make_batch(seen, images, None, 0.0)

    def evaluate(model, which: str) -> float | None:
        if scored[which] is None:
            return None
        return round(landmark_nme(model, scored[which], bases, device), 4)

    before = {w: evaluate(teacher, w) for w in scored}
    bar = progress(cfg.steps) if progress else None
    if bar is not None:
        bar.update(start)
    t0 = time.perf_counter()
    net.eval()  # frozen batch-norm statistics; gradients still flow
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, step])
        idx = rng.choice(len(train_set), size=min(cfg.batch_size, len(train_set)), replace=False)
        x, target = make_batch([train_set[i] for i in idx], images, rng, cfg.jitter)
        x_t = torch.from_numpy(x).to(device)
        target_t = torch.as_tensor(target, dtype=torch.float32, device=device)
        outputs = net(x_t)
        lm_loss = (bases.landmarks_xy(outputs) - target_t).abs().mean()
        with torch.no_grad():
            ref = teacher(x_t)
        reg = ((outputs - ref) ** 2).mean()
        loss = lm_loss + cfg.teacher_weight * reg
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"step": step + 1, "loss": float(loss.detach()), "landmark_loss": float(lm_loss.detach())})
        if bar is not None:
            bar.update(1)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            _save_checkpoint(ckpt_path, net, opt, step + 1, history, cfg)
    if bar is not None:
        bar.close()
    after = {w: evaluate(net, w) for w in scored}
    atomic.write_torch(out / MODEL, {"state_dict": net.state_dict(), "meta": asdict(cfg)})
    losses = [h["landmark_loss"] for h in history]
    metrics = {
        "n_faces": len(train_set) + len(val_set),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "steps": cfg.steps,
        "resumed_from_step": start,
        "device": device,
        "seconds": round(time.perf_counter() - t0, 2),
        "first_landmark_loss": round(losses[0], 6) if losses else None,
        "last_landmark_loss": round(float(np.mean(losses[-10:])), 6) if losses else None,
        "val_nme_before": before["val"],
        "val_nme_after": after["val"],
        "n_train_scored": len(seen),
        "train_nme_before": before["train"],
        "train_nme_after": after["train"],
        "model": str(out / MODEL),
        "config": asdict(cfg),
    }
    atomic.write_text(out / METRICS, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def landmark_nme(model, batch: tuple[np.ndarray, np.ndarray], bases: _TorchBases, device: str = "cpu") -> float:
    """Mean NME (%) of a network's single pass on `make_batch` output (inputs, crop-frame targets)."""
    import torch

    model.eval()
    with torch.no_grad():
        pred = bases.landmarks_xy(model(torch.from_numpy(batch[0]).to(device))).cpu().numpy()
    return nme_frame(pred, batch[1])


def _save_checkpoint(path: Path, net, opt, step: int, history: list[dict], cfg: Train3DConfig) -> None:

    state = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "history": history,
        "config": cfg.identity(),
    }
    atomic.write_torch(path, state)
