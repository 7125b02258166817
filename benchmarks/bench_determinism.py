"""What batch-independent inference costs: detection and embedding as facedata runs them now (one image per
RetinaFace pass, fixed 8-crop recognizer passes, one intra-op thread) against the batched passes they replaced
(RetinaFace over all same-size images of a batch at once, dlib-resnet over chunks of 32 crops), measured in the
same run, alternating, on one core (as a pool worker runs: one single-threaded process per core).

Two image sets, drawn with a fixed seed: LFW (all 250x250: the best case for batching by shape, so the worst
case for the change) and webfaces (mixed sizes: few shapes repeat). Detection is timed per image over batches of
`detect.batch_size`; embedding (with the default flip averaging) per face over batches of `embed.batch_size`.
It also reports whether the batched reference's results differ from the one-at-a-time ones (the defect the
change removes).

Usage: python -m benchmarks determinism [-- --n 64 --rounds 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEDATA_SHARED", REPO.parent / "shared"))


def _images(kind: str, n: int) -> list[np.ndarray]:
    from facedata.imageio import read_image_file

    files = sorted((SHARED / "data" / "faces" / kind).glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no images under {SHARED / 'data/faces' / kind}")
    return [read_image_file(p).rgb for p in sorted(random.Random(0).sample(files, min(n, len(files))))]


def batched_run(det, shrunk):
    """The RetinaFace pass this change replaced: all images of one shape through the network as one batch."""
    import torch

    from facedata.faces.retinaface import MEAN_BGR

    out, by_shape = {}, defaultdict(list)
    for i, item in enumerate(shrunk):
        if item is not None:
            by_shape[item[0].shape[:2]].append(i)
    mean = torch.tensor(MEAN_BGR).view(1, 3, 1, 1)
    with torch.inference_mode():
        for (h, w), idx in by_shape.items():
            x = torch.from_numpy(np.stack([shrunk[i][0] for i in idx])).permute(0, 3, 1, 2).flip(1).float() - mean
            deltas, logits, lm_deltas = det.net(x)
            boxes, lms = det._decode(deltas, lm_deltas, h, w)
            scores = torch.softmax(logits, dim=-1)[..., 1]
            for j, i in enumerate(idx):
                keep = scores[j] > det.candidate_score
                back = shrunk[i][1]
                out[i] = (boxes[j][keep] * back, scores[j][keep], lms[j][keep] * back)
    return out


def batched_embed(model, crops: list[np.ndarray], chunk: int = 32) -> np.ndarray:
    """The recognizer pass this change replaced: chunks of 32 crops, the last one as short as it comes."""
    import torch

    from facedata.embed import l2_normalize

    out = []
    with torch.inference_mode():
        for s in range(0, len(crops), chunk):
            x = torch.from_numpy(np.stack(crops[s : s + chunk]))
            v = torch.nn.functional.normalize(model._forward(x).float(), dim=1)
            if model.flip:
                v = v + torch.nn.functional.normalize(model._forward(x.flip(2)).float(), dim=1)
            out.append(v.numpy())
    return l2_normalize(np.concatenate(out))


def _timed(fn, items, batch):
    t0 = time.perf_counter()
    out = []
    for s in range(0, len(items), batch):
        out.extend(fn(items[s : s + batch]))
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from facedata.embed import make_embedder
    from facedata.faces.analyze import FaceAnalyzer
    from facedata.faces.detect import make_detector
    from facedata.params import defaults

    ap = argparse.ArgumentParser(prog="python -m benchmarks determinism")
    ap.add_argument("--n", type=int, default=64, help="images per set")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
    torch.set_num_threads(1)
    p = defaults()
    det = make_detector({**p["detect"], "device": "cpu"})
    emb = make_embedder(p["embed"]["model"], "cpu", p["embed"]["flip"])
    aligner = FaceAnalyzer({**p["detect"], "device": "cpu"})
    now = det._run
    print(
        f"{args.rounds} rounds, 1 thread, cpu; detect batch {p['detect']['batch_size']}, "
        f"embed batch {p['embed']['batch_size']}; seconds per item, medians"
    )
    print("| set | what | batched (before) | per image / fixed (now) | ratio now/before | results differ before |")
    print("|---|---|---|---|---|---|")
    results = []
    for kind in ("lfw", "webfaces"):
        images = _images(kind, args.n)
        crops = [f.crop for fs in aligner.analyze(images) for f in fs]
        t = {k: [] for k in ("db", "dn", "eb", "en")}
        for _ in range(args.rounds):
            det._run = lambda shrunk: batched_run(det, shrunk)
            s, before = _timed(det.detect, images, p["detect"]["batch_size"])
            t["db"].append(s / len(images))
            det._run = now
            s, after = _timed(det.detect, images, p["detect"]["batch_size"])
            t["dn"].append(s / len(images))
            s, vb = _timed(lambda c: list(batched_embed(emb, c)), crops, p["embed"]["batch_size"])
            t["eb"].append(s / len(crops))
            s, vn = _timed(lambda c: list(emb.embed(c)), crops, p["embed"]["batch_size"])
            t["en"].append(s / len(crops))
        d_diff = sum(not np.array_equal(a.boxes, b.boxes) for a, b in zip(before, after, strict=True))
        e_diff = sum(not np.array_equal(a, b) for a, b in zip(vb, vn, strict=True))
        m = {k: statistics.median(v) for k, v in t.items()}
        print(
            f"| {kind} ({len(images)} images) | detect (retinaface) | {m['db'] * 1000:.1f} ms | "
            f"{m['dn'] * 1000:.1f} ms | {m['dn'] / m['db']:.2f} | {d_diff} of {len(images)} images |"
        )
        print(
            f"| {kind} ({len(crops)} faces) | embed (dlib-resnet, flip) | {m['eb'] * 1000:.1f} ms | "
            f"{m['en'] * 1000:.1f} ms | {m['en'] / m['eb']:.2f} | {e_diff} of {len(crops)} vectors |"
        )
        results.append(
            {
                "set": kind,
                "images": len(images),
                "faces": len(crops),
                "seconds_per_item": m,
                "detect_ratio": m["dn"] / m["db"],
                "embed_ratio": m["en"] / m["eb"],
                "images_differing_before": d_diff,
                "vectors_differing_before": e_diff,
            }
        )
    return {"rounds": args.rounds, "results": results}
