"""Throughput of facedata's detect + align + embed against the face_recognition documentation recipe.

Both run in this invocation on the same images (default: 500 LFW images drawn with a fixed seed from
../shared/data/faces/lfw), alternating, several rounds; we report each side's median images/s and the ratio.

- reference: what face_recognition's README does for every image, one image at a time in one process:
  `face_locations(img)` (dlib HOG detector, upsampled once) then `face_encodings(img, locations)` (dlib's
  5-point shape predictor + ResNet descriptor, `num_jitters=1`). face_recognition is a thin wrapper over
  these dlib calls; we call dlib directly with the same models and arguments (the package itself is not a
  facedata dependency).
- facedata: `facedata.faces.analyze.analyze_files` with the default params (RetinaFace, dlib-resnet torch
  port, flip averaging, one worker process per core), timed from the call to the last result, so process start-up
  and model loading are included.

Both sides' detection rate is measured with the same rule (a face whose box contains the image centre: the
labelled LFW face). `python -m benchmarks faces -- --n 500 --rounds 3`.

`--reference-verification` instead measures the same recipe's LFW-pairs accuracy on `pairs_shared.txt` (the
centred face of each image; 10-fold protocol of `facedata evaluate verification`), to show what dlib's own
pipeline reaches on these pairs: the ceiling of the default recognizer, independent of facedata's detection
and alignment.

`--views-dev [--views yunet,mtcnn,dlib5] [--jitter N]` measures what alignment views (`embed.align_views`) and
jitter (`embed.jitter`; `--views ''` for jitter alone) buy: every LFW
image's centred face is embedded with the default params and with the views; development pairs are drawn only
from images that no line of `pairs_shared.txt` uses (same-person pairs: up to 100 per person; 400,000 random
different-person pairs; seeded), and both configurations get the equal error rate and TAR at FAR 1e-3 / 1e-4
there, plus the 10-fold accuracy on `pairs_shared.txt`. The views were chosen on such development pairs, not on
the benchmark pairs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEDATA_SHARED", REPO.parent / "shared"))  # as in tests/conftest.py


def sample_images(n: int, seed: int = 0) -> list[Path]:
    root = SHARED / "data" / "faces" / "lfw"
    files = sorted(root.glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no LFW images under {root}")
    return sorted(random.Random(seed).sample(files, min(n, len(files))))


def centred(boxes: list[tuple[float, float, float, float]], w: int, h: int) -> bool:
    return any(x1 <= w / 2 <= x2 and y1 <= h / 2 <= y2 for x1, y1, x2, y2 in boxes)


def run_reference(paths: list[Path]) -> tuple[float, float]:
    """(seconds, detection rate) of the face_recognition recipe, model loading included."""
    import dlib
    from PIL import Image

    from facedata import models

    t0 = time.perf_counter()
    detector = dlib.get_frontal_face_detector()
    shape5 = dlib.shape_predictor(str(models.locate_file("dlib-shape5")))
    encoder = dlib.face_recognition_model_v1(str(models.locate_file("dlib-resnet")))
    found = 0
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB"))  # face_recognition.load_image_file
        rects = detector(img, 1)  # face_recognition.face_locations(img), model="hog", upsample 1
        for r in rects:  # face_recognition.face_encodings(img, locations), model="small", num_jitters=1
            np.array(encoder.compute_face_descriptor(img, shape5(img, r), 1))
        h, w = img.shape[:2]
        found += centred([(r.left(), r.top(), r.right(), r.bottom()) for r in rects], w, h)
    return time.perf_counter() - t0, found / len(paths)


def reference_verification() -> dict:
    """The face_recognition recipe's verification accuracy on pairs_shared.txt, counting pairs with an
    image where HOG finds no face as errors (as facedata's evaluation does) and also without them."""
    import dlib
    from PIL import Image
    from tqdm import tqdm

    from facedata import models
    from facedata.faces.evaluate import parse_pairs, verification_metrics

    root = SHARED / "data" / "faces" / "lfw"
    pairs = parse_pairs(root / "pairs_shared.txt")
    detector = dlib.get_frontal_face_detector()
    shape5 = dlib.shape_predictor(str(models.locate_file("dlib-shape5")))
    encoder = dlib.face_recognition_model_v1(str(models.locate_file("dlib-resnet")))
    enc: dict[str, np.ndarray | None] = {}
    for rel in tqdm(sorted({p.a for p in pairs} | {p.b for p in pairs}), desc="reference recipe", unit="img"):
        img = np.asarray(Image.open(root / rel).convert("RGB"))
        h, w = img.shape[:2]
        rects = sorted(detector(img, 1), key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2)
        enc[rel] = np.array(encoder.compute_face_descriptor(img, shape5(img, rects[0]), 1)) if rects else None
    d = np.array(
        [
            np.linalg.norm(enc[p.a] - enc[p.b]) if enc[p.a] is not None and enc[p.b] is not None else np.inf
            for p in pairs
        ]
    )
    same, folds = np.array([p.same for p in pairs]), np.array([p.fold for p in pairs])
    found = np.isfinite(d)
    return {
        "images_without_face": sum(v is None for v in enc.values()),
        "all_pairs": verification_metrics(d, same, folds),
        "pairs_with_both_faces": verification_metrics(d[found], same[found], folds[found]),
    }


def _centred_embeddings(paths: list[Path], detect: dict, embed: dict, desc: str) -> np.ndarray:
    """(n, d) embeddings of each image's centred face (NaN rows where there is none)."""
    from tqdm import tqdm

    from facedata.faces.analyze import labelled_embeddings

    out = None
    with tqdm(total=len(paths), desc=desc, unit="img") as bar:
        for k, (_, v) in enumerate(labelled_embeddings(paths, detect, embed, 0, progress=bar)):
            if v is not None:
                out = np.full((len(paths), len(v)), np.nan, np.float32) if out is None else out
                out[k] = v
    return out


def _rates(pos: np.ndarray, neg: np.ndarray) -> dict:
    """Equal error rate and TAR at FAR 1e-3 / 1e-4 of distances (smaller = same person)."""
    neg = np.sort(neg)
    grid = np.quantile(np.concatenate([pos, neg]), np.linspace(0.0005, 0.9995, 4000))
    frr = np.searchsorted(np.sort(pos), grid, side="right")
    far = np.searchsorted(neg, grid, side="right") / len(neg)
    eer = float(np.min(np.maximum(1 - frr / len(pos), far)))
    tar = {f"tar_at_far_{f:g}": round(float(np.mean(pos < neg[int(f * len(neg))])), 4) for f in (1e-3, 1e-4)}
    return {"eer": round(eer, 5), **tar}


def views_dev(views: list[str], jitter: int = 0) -> dict:
    """Default alignment vs alignment views and/or jitter, on development pairs image-disjoint from
    pairs_shared.txt."""
    import itertools

    from facedata.faces.evaluate import parse_pairs, verification_metrics
    from facedata.params import defaults

    root = SHARED / "data" / "faces" / "lfw"
    pairs = parse_pairs(root / "pairs_shared.txt")
    files = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.jpg"))
    index = {f: i for i, f in enumerate(files)}
    people = np.array([f.split("/")[0] for f in files])
    benchmark_images = {p.a for p in pairs} | {p.b for p in pairs}
    rng = np.random.default_rng(1)
    by_person: dict[str, list[int]] = {}
    for f in files:
        if f not in benchmark_images:
            by_person.setdefault(f.split("/")[0], []).append(index[f])
    same = []
    for ims in by_person.values():
        combos = list(itertools.combinations(ims, 2))
        rng.shuffle(combos)
        same += combos[:100]
    same_a, same_b = np.array(same).T
    dev = np.array([i for ims in by_person.values() for i in ims])
    neg_a, neg_b = rng.choice(dev, 400_000), rng.choice(dev, 400_000)
    keep = people[neg_a] != people[neg_b]
    neg_a, neg_b = neg_a[keep], neg_b[keep]
    ta, tb = np.array([index[p.a] for p in pairs]), np.array([index[p.b] for p in pairs])
    ts, tf = np.array([p.same for p in pairs]), np.array([p.fold for p in pairs])

    params = defaults()
    detect, embed = dict(params["detect"], device="cpu"), dict(params["embed"], device="cpu")
    result = {"n_dev_same": len(same_a), "n_dev_different": len(neg_a), "align_views": views, "jitter": jitter}
    for name, emb in (("default", embed), ("views", dict(embed, align_views=views, jitter=jitter))):
        t0 = time.perf_counter()
        vecs = _centred_embeddings([root / f for f in files], detect, emb, name)
        seconds = time.perf_counter() - t0

        def dist(a, b, vecs=vecs):
            return np.nan_to_num(np.linalg.norm(vecs[a] - vecs[b], axis=1), nan=np.inf)

        bench = verification_metrics(dist(ta, tb), ts, tf)
        result[name] = {
            "dev": _rates(dist(same_a, same_b), dist(neg_a, neg_b)),
            "pairs_shared_accuracy": bench["accuracy"],
            "pairs_shared_tar_at_far_1e-3": bench["tar_at_far_1e-3"],
            "img_per_s": round(len(files) / seconds, 2),
        }
        print(name, result[name], flush=True)
    return result


def run_facedata(
    paths: list[Path], detect: dict, embed: dict, workers: int, batch: int = 8
) -> tuple[float, float]:
    from facedata.faces.analyze import analyze_files

    t0 = time.perf_counter()
    found = 0
    for res in analyze_files(paths, detect, embed, workers, batch_size=batch):
        found += centred([tuple(map(float, f.box)) for f in res.faces], res.width, res.height)
    return time.perf_counter() - t0, found / len(paths)


def embedder_speed(paths: list[Path], n_faces: int = 64) -> dict:
    """ms per face of dlib's own ResNet vs facedata's torch port of it, one core each, on the same chips."""
    import dlib
    import torch
    from PIL import Image

    from facedata import models
    from facedata.embed.dlib_resnet import build_module, read_weights
    from facedata.faces.pool import available_cores, set_threads

    set_threads(1)
    detector = dlib.get_frontal_face_detector()
    shape5 = dlib.shape_predictor(str(models.locate_file("dlib-shape5")))
    chips = []
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB"))
        rects = detector(img, 1)
        if rects:
            chips.append(dlib.get_face_chip(img, shape5(img, rects[0]), size=150, padding=0.25))
        if len(chips) == n_faces:
            break
    native = dlib.face_recognition_model_v1(str(models.locate_file("dlib-resnet")))
    net = build_module(read_weights(models.locate_file("dlib-resnet")))
    t0 = time.perf_counter()
    ref = np.array([np.asarray(native.compute_face_descriptor(c)) for c in chips])
    t_native = time.perf_counter() - t0
    with torch.inference_mode():
        net(torch.from_numpy(np.stack(chips[:8])))  # warm-up
        t0 = time.perf_counter()
        got = np.concatenate(
            [net(torch.from_numpy(np.stack(chips[i : i + 32]))).numpy() for i in range(0, len(chips), 32)]
        )
        t_torch = time.perf_counter() - t0
    set_threads(available_cores())
    return {
        "faces": len(chips),
        "dlib_ms_per_face": round(1000 * t_native / len(chips), 1),
        "torch_port_ms_per_face": round(1000 * t_torch / len(chips), 1),
        "speedup": round(t_native / t_torch, 2),
        "max_abs_difference": float(np.abs(got - ref).max()),
    }


def measure_templates(n: int = 400, seed: int = 1) -> dict:
    """Where each detector puts its five points inside dlib's own 150 px face chips (dlib HOG detector, 5-point
    predictor, `get_face_chip(size=150, padding=0.25)`), averaged over `n` LFW identities and made symmetric:
    the `dlib150` template in that detector's convention (facedata.faces.align.DETECTOR_TEMPLATES)."""
    import cv2
    import dlib

    from facedata import models
    from facedata.faces.detect import DETECTORS, make_detector
    from facedata.imageio import read_image_file
    from facedata.params import defaults

    root = SHARED / "data" / "faces" / "lfw"
    ids = sorted(d for d in root.iterdir() if d.is_dir())
    files = [sorted(d.glob("*.jpg"))[0] for d in random.Random(seed).sample(ids, n)]
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(models.locate_file("dlib-shape5")))
    params = defaults()["detect"]
    detectors = {name: make_detector({**params, "detector": name, "device": "cpu"}) for name in DETECTORS}
    points: dict[str, list] = {name: [] for name in detectors}
    for f in files:
        img = read_image_file(f).rgb
        rects = det(img, 1)
        if not rects:
            continue
        chip = dlib.get_face_chip(img, sp(img, rects[0]), size=150, padding=0.25)
        canvas = np.zeros((500, 500, 3), np.uint8)  # the chip at 2x, with a margin so detectors see a face
        canvas[100:400, 100:400] = cv2.resize(chip, (300, 300), interpolation=cv2.INTER_CUBIC)
        for name, d in detectors.items():
            found = d.detect([canvas])[0]
            if len(found):
                points[name].append((found.landmarks[0] - 100) / 2)
    out = {}
    for name, pts in points.items():
        m = np.mean(pts, axis=0)
        ex, ey = (m[0, 0] + 150 - m[1, 0]) / 2, (m[0, 1] + m[1, 1]) / 2
        mx, my = (m[3, 0] + 150 - m[4, 0]) / 2, (m[3, 1] + m[4, 1]) / 2
        sym = [[ex, ey], [150 - ex, ey], [75.0, m[2, 1]], [mx, my], [150 - mx, my]]
        out[name] = {"faces": len(pts), "template": np.round(sym, 1).tolist()}
    return out


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks faces --")
    ap.add_argument("--n", type=int, default=500, help="number of LFW images")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of reference and facedata")
    ap.add_argument("--workers", type=int, default=0, help="facedata worker processes (0: one per core)")
    ap.add_argument("--detector", default=None, help="override detect.detector")
    ap.add_argument("--no-flip", action="store_true", help="embed without flip averaging")
    ap.add_argument("--align-views", default="", help="embed.align_views for the throughput run, e.g. yunet,dlib5")
    ap.add_argument("--jitter", type=int, default=0, help="embed.jitter for the throughput run and --views-dev")
    ap.add_argument("--gpu", action="store_true", help="also time facedata with device cuda (if present)")
    ap.add_argument("--measure-templates", action="store_true", help="only measure the per-detector templates")
    ap.add_argument(
        "--reference-verification", action="store_true", help="only the recipe's accuracy on pairs_shared.txt"
    )
    ap.add_argument("--views-dev", action="store_true", help="only default vs alignment views, dev + benchmark")
    ap.add_argument("--views", default="yunet,mtcnn,dlib5", help="embed.align_views for --views-dev ('' for none)")
    args = ap.parse_args(argv)
    if args.views_dev:
        os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
        return {"views_dev": views_dev([v for v in args.views.split(",") if v], args.jitter)}
    if args.reference_verification:
        os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
        return {"reference_verification": reference_verification()}
    if args.measure_templates:
        os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
        return {"dlib150_templates": measure_templates()}

    os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
    from facedata.faces.pool import available_cores
    from facedata.params import defaults

    params = defaults()
    detect, embed = dict(params["detect"], device="cpu"), dict(params["embed"], device="cpu")
    if args.detector:
        detect["detector"] = args.detector
    if args.no_flip:
        embed["flip"] = False
    if args.align_views:
        embed["align_views"] = args.align_views.split(",")
    embed["jitter"] = args.jitter
    paths = sample_images(args.n)
    n = len(paths)
    ref_rates, fd_rates, ratios = [], [], []
    ref_det = fd_det = None
    for r in range(args.rounds):
        t_ref, ref_det = run_reference(paths)
        t_fd, fd_det = run_facedata(paths, detect, embed, args.workers)
        ref_rates.append(n / t_ref)
        fd_rates.append(n / t_fd)
        ratios.append(t_ref / t_fd)
        print(
            f"round {r + 1}: reference {n / t_ref:.2f} img/s (detection {ref_det:.4f}), "
            f"facedata {n / t_fd:.2f} img/s (detection {fd_det:.4f}), ratio {t_ref / t_fd:.2f}",
            flush=True,
        )
    result = {
        "embedder_one_core": embedder_speed(paths),
        "images": n,
        "rounds": args.rounds,
        "cores": available_cores(),
        "facedata_config": {
            "detector": detect["detector"],
            "model": embed["model"],
            "flip": embed["flip"],
            "align_views": embed["align_views"],
            "jitter": embed["jitter"],
            "workers": args.workers or available_cores(),
        },
        "reference_img_per_s": [round(v, 2) for v in ref_rates],
        "facedata_img_per_s": [round(v, 2) for v in fd_rates],
        "reference_median_img_per_s": round(statistics.median(ref_rates), 2),
        "facedata_median_img_per_s": round(statistics.median(fd_rates), 2),
        "ratio_of_medians": round(statistics.median(fd_rates) / statistics.median(ref_rates), 2),
        "median_round_ratio": round(statistics.median(ratios), 2),
        "reference_detection_rate": round(ref_det, 4),
        "facedata_detection_rate": round(fd_det, 4),
    }
    if args.gpu:
        import torch

        if torch.cuda.is_available():
            gd = dict(detect, device="cuda", detector="retinaface")
            ge = dict(embed, device="cuda")
            run_facedata(paths[:64], gd, ge, 1, 64)  # warm-up: CUDA context, kernels
            gpu = [n / run_facedata(paths, gd, ge, 1, 64)[0] for _ in range(args.rounds)]
            result["gpu"] = {
                "device": torch.cuda.get_device_name(0),
                "detector": "retinaface",
                "img_per_s": [round(v, 2) for v in gpu],
                "median_img_per_s": round(statistics.median(gpu), 2),
            }
        else:
            result["gpu"] = "no CUDA device"
    return result
