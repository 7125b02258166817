"""One training run of a project's recognizer, start to finish: what stage `train` and `facedata train
recognizer` both call.

    data -> network -> fit (checkpointed) -> scores on the test split and on impostors -> threshold ->
    model.pt + model.onnx (checked) + model card + per-epoch history

Output layout (`out`): `model.pt`, `model.onnx`, `MODEL_CARD.md`, `model_card.json`; the per-epoch history goes
to `plots` (CSV, a DVC plot); the checkpoint (the resume point) to `checkpoint`, outside DVC's outputs so
that DVC does not delete it before a rerun.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facedata import __version__, atomic
from facedata.train import card as card_mod
from facedata.train.config import TrainConfig
from facedata.train.data import TrainDataError, TrainingData, load

PLOT_FIELDS = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1")


def distractor_files(folders: list[dict], exclude: set[str], seed: int, root: Path | None = None) -> list[Path]:
    """Photos of people not in the cast from `train.distractors` folders (`<person>/<photos>`): people whose
    folder name is a cast identity are skipped; people are taken in a seeded order, one photo each, then a
    second each..., up to each folder's `max_images` (all when absent)."""
    from facedata.faces.evaluate import IMAGE_EXTENSIONS

    out: list[Path] = []
    for spec in folders:
        base = Path(spec["root"]).expanduser()
        base = base if base.is_absolute() or root is None else root / base
        if not base.is_dir():
            raise TrainDataError(f"train.distractors folder {base} does not exist")
        people = [p for p in sorted(base.iterdir()) if p.is_dir() and p.name not in exclude]
        rng = np.random.default_rng([seed, len(people)])
        people = [people[i] for i in rng.permutation(len(people))]
        photos = [sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS) for p in people]
        cap = int(spec.get("max_images") or 10**9)
        picked: list[Path] = []
        depth = 0
        while len(picked) < cap and any(depth < len(ph) for ph in photos):
            picked += [ph[depth] for ph in photos if depth < len(ph)][: cap - len(picked)]
            depth += 1
        out += picked
    return out


@dataclass
class Distractors:
    """Primary usable faces of the distractor photos: their stored-embedding-model vectors, aligned crops and
    person (folder name); `negatives` marks the half of the people (by a seeded hash) trained on, the rest
    measure open-set rejection."""

    x: np.ndarray
    crops: list[np.ndarray]
    people: list[str]
    negatives: np.ndarray

    def fingerprint(self, rows: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.x[rows]).tobytes()).hexdigest()[:16]


def distractor_faces(
    files: list[Path], detect: dict, embed: dict, root: Path, seed: int, cache_dir: Path, crops: bool
) -> Distractors:
    """The distractor photos' primary usable faces (with aligned crops when `crops`), cached in `cache_dir` by
    the files (path, size, mtime) and every detect/embed setting that changes results, so a retraining does
    not detect them again."""
    import json

    from facedata.params import SPEC

    def results_only(section: str, p: dict) -> dict:
        return {k: v for k, v in p.items() if not getattr(SPEC.get(f"{section}.{k}"), "perf", False)}

    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = json.dumps([stats, results_only("detect", detect), results_only("embed", embed), crops], default=str)
    cache = cache_dir / f"distractors-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if cache.exists():
        with np.load(cache) as z:
            x, people, c = z["x"], [str(v) for v in z["people"]], list(z["crops"]) if crops else []
    else:
        x, c, people = _detect_primary_faces(files, detect, embed, root, crops)
        if not len(x):
            raise TrainDataError(f"no usable face in the {len(files)} train.distractors photos")
        arrays = {"x": x, "people": np.asarray(people), "crops": np.asarray(c) if crops else np.zeros(0)}

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a temporary name
                np.savez(fh, **arrays)

        atomic.write_with(cache, save)
    half = np.asarray([int(hashlib.sha256(f"{seed}\x1f{n}".encode()).hexdigest()[:8], 16) % 2 for n in people])
    return Distractors(np.asarray(x, dtype=np.float32), c, people, half == 0)


def _detect_primary_faces(files: list[Path], detect: dict, embed: dict, root: Path, crops: bool):
    """(vectors, crops, people) of the photos' primary usable faces: over the worker pool, or in this process
    when the aligned crops are wanted too."""
    xs, cs, people = [], [], []
    if not crops:
        from facedata.faces.analyze import analyze_files

        for f, res in zip(files, analyze_files(files, detect, embed, detect["workers"], root=root), strict=True):
            face = next((x for x in res.faces if x.is_primary and x.ok), None)
            if face is not None:
                xs.append(face.embedding)
                people.append(f.parent.name)
        return np.asarray(xs, dtype=np.float32), cs, people
    from facedata.faces.analyze import FaceAnalyzer
    from facedata.imageio import ImageRejected, read_image_file

    analyzer = FaceAnalyzer(detect, embed, root)
    for s in range(0, len(files), 8):
        batch = []
        for p in files[s : s + 8]:
            try:
                batch.append((p, read_image_file(p, min_side=1).rgb))
            except (OSError, ImageRejected):
                continue
        for (p, _), faces in zip(batch, analyzer.analyze([rgb for _, rgb in batch], keep_crops=True), strict=True):
            f = next((f for f in faces if f.is_primary and f.ok), None)
            if f is not None:
                xs.append(f.embedding)
                cs.append(f.crop)
                people.append(p.parent.name)
    return np.asarray(xs, dtype=np.float32), cs, people


def make_net(cfg: TrainConfig, x: np.ndarray, y: np.ndarray, w: np.ndarray, n_classes: int, device: str):
    """The network for `cfg.mode`, prototypes at the weighted class means of the training vectors `x` (the
    stored embeddings, also for finetune: the backbone starts as the model that made them)."""
    from facedata.train import export, heads

    protos = heads.class_means(x, y, w, n_classes)
    backbone = export.dlib_backbone(device) if cfg.mode == "finetune" else None
    return heads.build(cfg.mode, cfg.projection, cfg.hidden_dim, x.shape[1], protos, backbone).to(device)


def fit_vectors(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    n_classes: int,
    cfg: TrainConfig,
    device: str = "cpu",
    negatives: np.ndarray | None = None,
):
    """A head (or centroid) model fitted on given vectors (and strangers' vectors as negatives), without
    checkpoints: how the curation benchmark trains the same recognizer on differently labelled faces."""
    import torch

    from facedata.train.loop import Batches, deterministic, fit

    with deterministic(cfg.threads, device):
        torch.manual_seed(cfg.seed)
        net = make_net(cfg, x, y, w, n_classes, device)
        if cfg.mode != "centroid":
            none = np.zeros(0, dtype=np.int64)
            neg = None
            if negatives is not None and len(negatives):
                neg = Batches(np.full(len(negatives), -1), np.ones(len(negatives)), _vectors(negatives))
            fit(
                net,
                Batches(y, w, _vectors(x)),
                Batches(none, none.astype(float), _vectors(x)),
                cfg,
                None,
                {},
                device,
                log=lambda m: None,
                negatives=neg,
            )
    return net.eval()


def _vectors(m: np.ndarray):
    """A batch maker over rows of a vector matrix."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))
    return lambda idx, rng: t[idx]


def embed_inputs(net, inputs: Callable[[np.ndarray], object], n: int, flip_crops: bool, device: str) -> np.ndarray:
    """The model's unit embeddings of n inputs (for crops: averaged with the mirrored crop, like stage embed)."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.no_grad():
        for s in range(0, n, 128):
            x = inputs(np.arange(s, min(s + 128, n))).to(device)
            z = net.embed(x)
            if flip_crops:
                z = F.normalize(z + net.embed(x.flip(3)), dim=1)
            out.append(z.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.prototypes.shape[1]), np.float32)


def _prototypes(net) -> np.ndarray:
    import torch.nn.functional as F

    return F.normalize(net.prototypes.detach(), dim=1).cpu().numpy()


def write_plots(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PLOT_FIELDS, lineterminator="\n")
    w.writeheader()
    for h in history:
        w.writerow({k: "" if h.get(k) is None else h[k] for k in PLOT_FIELDS})
    atomic.write_text(path, buf.getvalue())


def train_project(
    root: str | Path,
    params: dict,
    out: Path,
    checkpoint: Path,
    plots: Path,
    progress=None,
    log: Callable[[str], None] = print,
    cfg: TrainConfig | None = None,
) -> dict:
    """Train, evaluate and export the project's recognizer with `params` (its `train` section unless `cfg` is
    given); returns the metrics."""
    import torch

    from facedata.device import resolve_device
    from facedata.train import evaluate as ev
    from facedata.train import export
    from facedata.train.crops import CropStore, normalise
    from facedata.train.loop import Batches, deterministic, evaluate_batches, fit

    root = Path(root)
    cfg = cfg or TrainConfig.from_params(params["train"])
    embed_params = params["embed"]
    if cfg.mode == "finetune" and embed_params["model"] != "dlib-resnet":
        raise TrainDataError(
            f"train.mode finetune fine-tunes the dlib ResNet, but embed.model is {embed_params['model']!r}: "
            "set embed.model: dlib-resnet, or use train.mode head"
        )
    data = load(root, embed_params["model"], cfg)
    device = resolve_device(cfg.device)
    y_all = data.labels
    tr, va, te = data.rows("train"), data.rows("val"), data.rows("test")
    n_classes = len(data.classes)
    dis = None
    if cfg.distractors:
        files = distractor_files(cfg.distractors, set(data.classes), cfg.seed, root)
        log(f"embedding {len(files)} distractor photos (people not in the cast)")
        dis = distractor_faces(
            files,
            params["detect"],
            {**embed_params, "device": device},
            root,
            cfg.seed,
            checkpoint.parent,
            crops=cfg.mode == "finetune",
        )
    neg = np.flatnonzero(dis.negatives) if dis is not None else np.zeros(0, dtype=np.int64)
    imp = np.flatnonzero(~dis.negatives) if dis is not None else np.zeros(0, dtype=np.int64)
    t0 = time.perf_counter()
    with deterministic(cfg.threads, device):
        torch.manual_seed(cfg.seed)
        net = make_net(cfg, data.x[tr], y_all[tr], data.weights[tr], n_classes, device)
        finetune = cfg.mode == "finetune"
        mean_rgb = net.backbone.mean.detach().cpu().numpy().reshape(3) if finetune else None
        crops = CropStore(data.crop_paths) if finetune else None
        d_crops = CropStore([], dis.crops) if finetune and dis is not None else None

        def inputs(rows: np.ndarray, augment: bool = False, vectors=data.x, store=crops):
            """Batch maker over `rows` of the dataset (or of the distractors, with their vectors and crops)."""

            def make(idx: np.ndarray, rng: np.random.Generator | None):
                if not finetune:
                    return torch.from_numpy(vectors[rows[idx]])
                return torch.from_numpy(normalise(store.batch(rows[idx], rng, augment), mean_rgb))

            return make

        def embed(rows: np.ndarray, **kw) -> np.ndarray:
            make = inputs(rows, **kw)
            return embed_inputs(net, lambda i: make(i, None), len(rows), finetune, device)

        train_b = Batches(y_all[tr], data.weights[tr], inputs(tr, cfg.augment))
        val_b = Batches(y_all[va], np.ones(len(va)), inputs(va))
        neg_b = None
        if len(neg):
            neg_b = Batches(np.full(len(neg), -1), np.ones(len(neg)), inputs(neg, cfg.augment, dis.x, d_crops))
        origin = {
            "config": cfg.identity(),
            "data": data.fingerprint(),
            "classes": data.classes,
            "negatives": dis.fingerprint(neg) if dis is not None else None,
        }
        start_hist = [
            {
                "epoch": 0,
                "lr": None,
                **{f"train_{k}": v for k, v in evaluate_batches(net, train_b, cfg, device).items()},
                **{f"val_{k}": v for k, v in evaluate_batches(net, val_b, cfg, device).items()},
            }
        ]
        history = []
        if cfg.mode != "centroid":
            history = fit(net, train_b, val_b, cfg, checkpoint, origin, device, progress, log, negatives=neg_b)
        train_seconds = round(time.perf_counter() - t0, 2)
        net.eval()
        p = _prototypes(net)
        test_scores = embed(te) @ p.T
        base_scores = ev.nearest_centroid_scores(data.x[tr], y_all[tr], n_classes, data.x[te])

        # impostors: the held-out half of the distractors, else the cast with each face's own identity left out
        if len(imp):
            impostors = (embed(imp, vectors=dis.x, store=d_crops) @ p.T).max(1)
            base_impostors = ev.nearest_centroid_scores(data.x[tr], y_all[tr], n_classes, dis.x[imp]).max(1)
            protocol = f"distractors ({len(imp)} faces of people not in the cast, none trained on)"
            calib = impostors
        else:
            impostors = ev.leave_class_out(test_scores, y_all[te])
            base_impostors = ev.leave_class_out(base_scores, y_all[te])
            protocol = "leave_class_out (no held-out distractors: each test face scored without its own identity)"
            vt = np.concatenate([va, te])
            calib = ev.leave_class_out(embed(vt) @ p.T, y_all[vt])
        threshold = ev.score_at_far(calib, cfg.far) if len(calib) else 0.0
        threshold = float(threshold) if np.isfinite(threshold) else 1.0
        metrics_test = ev.identification(test_scores, y_all[te], impostors)
        metrics_base = ev.identification(base_scores, y_all[te], base_impostors)
        right = test_scores.argmax(1) == y_all[te] if len(te) else np.zeros(0, bool)
        tar_at_threshold = float((right & (test_scores.max(1) > threshold)).mean()) if len(te) else None

        # export: state_dict + ONNX (checked against torch on real inputs)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "mode": cfg.mode,
            "classes": data.classes,
            "dim": int(data.x.shape[1]),
            "projection": "none" if cfg.mode == "centroid" else cfg.projection,
            "hidden_dim": cfg.hidden_dim,
            "threshold": round(threshold, 6),
            "far": cfg.far,
            "input": "crop" if finetune else "face_embedding",  # the ONNX model's input name
            "embed": {k: embed_params[k] for k in ("model", "flip", "align_views", "jitter", "onnx")},
            "facedata_version": __version__,
        }
        if finetune:
            from facedata.embed.dlib_resnet import normalization, read_weights
            from facedata.models import locate_file

            meta["onnx_input"] = normalization(read_weights(locate_file("dlib-resnet")))
        export.save(out / export.MODEL, net, meta)
        example = inputs(tr)(np.arange(min(8, len(tr))), None).float()
        onnx_diff = export.export_onnx(net, out / export.ONNX, example.cpu(), meta["input"])
        net.to(device)

    verification = None
    if finetune and cfg.eval_pairs:
        verification = _verify_pairs(root, params, cfg, out / export.ONNX, meta["onnx_input"])
    write_plots(plots, start_hist + history)
    last = (start_hist + history)[-1]
    metrics = {
        "mode": cfg.mode,
        "n_classes": n_classes,
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "n_test": int(len(te)),
        "n_negatives": int(len(neg)),
        "epochs_run": len(history),
        "train_seconds": train_seconds,
        "seconds_per_epoch": round(train_seconds / len(history), 3) if history else None,
        "device": device,
        "top1": metrics_test["top1"],
        "tar_at_far_1e-2": metrics_test["tar_at_far_1e-2"],
        "tar_at_far_1e-3": metrics_test["tar_at_far_1e-3"],
        "val_top1": last["val_top1"],
        "threshold": round(threshold, 6),
        "tar_at_threshold": None if tar_at_threshold is None else round(tar_at_threshold, 5),
        "open_set_protocol": protocol,
        "test": metrics_test,
        "baseline": metrics_base,
        "onnx_max_abs_diff": onnx_diff,
        "review": data.review,
        "model": str(out / export.MODEL),
    }
    if verification:
        metrics["verification"] = verification
    card_mod.write(out, _card(data, cfg, metrics, meta, len(history), protocol))
    return metrics


#: Facts of one run, not of the model: they go to the stage's run report, not into metrics or the model card,
#: so a rebuild's metrics and card are byte-identical.
RUN_ONLY = ("seconds", "seconds_per_epoch", "train_seconds", "device")


def _card(data: TrainingData, cfg: TrainConfig, metrics: dict, meta: dict, epochs, protocol) -> dict:
    train_rows = data.rows("train")
    counts = np.bincount(data.labels[train_rows], minlength=len(data.classes))
    return {
        "facedata_version": __version__,
        "config": asdict(cfg),
        "classes": data.classes,
        "input": meta["input"],
        "onnx_input": meta.get("onnx_input"),
        "threshold": meta["threshold"],
        "open_set_protocol": protocol,
        "epochs_run": epochs,
        "base_weights": card_mod.base_weights(meta["embed"]["model"]),
        "review": data.review,
        "metrics": {k: v for k, v in metrics.items() if k not in RUN_ONLY},
        "data": {
            **data.source,
            "n_faces": len(data),
            "n_classes": len(data.classes),
            "splits": {s: int((data.splits == s).sum()) for s in sorted(set(data.splits.tolist()))},
            "per_identity": {
                "min": int(counts.min()),
                "median": float(np.median(counts)),
                "max": int(counts.max()),
            },
        },
    }


def _verify_pairs(root: Path, params: dict, cfg: TrainConfig, onnx_path: Path, spec: dict) -> dict:
    """LFW-style pairs verification of the fine-tuned embedding (through the exported ONNX model, as
    `embed.model: onnx:` would run it) and of the base model, same faces, same protocol."""
    from facedata.faces.analyze import labelled_embeddings
    from facedata.faces.evaluate import parse_pairs, verification_metrics

    pairs_file = Path(cfg.eval_pairs).expanduser()
    pairs_file = pairs_file if pairs_file.is_absolute() else root / pairs_file
    pairs = parse_pairs(pairs_file, cfg.eval_pairs_limit)
    files = sorted({p.a for p in pairs} | {p.b for p in pairs})
    base = params["embed"]
    tuned = {**base, "model": f"onnx:{onnx_path}", "onnx": spec, "align_views": [], "jitter": 0, "device": "cpu"}
    out = {"pairs": f"{pairs_file} ({len(pairs)} pairs)"}
    for key, embed in (("before", base), ("after", tuned)):
        vec = {}
        paths = [pairs_file.parent / f for f in files]
        for rel, (_, v) in zip(files, labelled_embeddings(paths, params["detect"], embed), strict=True):
            if v is not None:
                vec[rel] = v
        dist = np.array(
            [np.linalg.norm(vec[p.a] - vec[p.b]) if p.a in vec and p.b in vec else np.inf for p in pairs]
        )
        out[key] = verification_metrics(dist, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    return out
