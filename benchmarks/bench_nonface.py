"""Could a face/non-face gate drop the detections that are not faces without dropping real faces? (issue 17)

On the Hamilton clip RetinaFace scores two detections that are not faces (a hand, a blurred patch; labelled
`not_a_face_*` in `benchmarks/data/hamilton_faces.csv`) as faces (0.95-0.96), and one of them joined a
person's cluster. Before fixing the clustering instead, this measures the gate candidates on every usable
face (status `ok`) of the default detect / embed settings:

- `score`: the detector's confidence;
- `template_residual`: how far the five landmarks are from the alignment template after the best similarity
  fit (RMS, in crop widths): a non-face's landmarks are guesses and need not look like a face's;
- `raw_norm`: the length of dlib's descriptor before normalisation (with ArcFace-style models the feature
  norm tracks face quality);
- `flip_consistency`: cosine between the descriptors of the crop and its mirror image (a face and its mirror
  are the same person).

The protocol keeps the test labels out of the choice: each gate's cut is chosen on tuning data (webfaces, all
12 people, and a seeded sample of the LFW tune half) as the value that drops `--max-loss` of their faces,
then applied to the Hamilton faces (how many non-faces and how many real faces it drops). For a diagnosis it
also reports the cut that would drop every Hamilton non-face (chosen on the test labels, so not a usable
setting) and what it costs in real faces there and on the tuning data.

`python -m benchmarks nonface -- --cache-dir DIR` (the evaluation caches of `facedata evaluate clustering`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: Signals where a low value means "less face-like" (the others: a high value does).
LOW_IS_BAD = {"score": True, "template_residual": False, "raw_norm": True, "flip_consistency": True}


def _signals(root: Path, rows: list[dict]) -> dict[str, np.ndarray]:
    """Every signal for the given `faces` manifest rows of a project (crops read from its store)."""
    import torch

    from facedata.device import inference_threads
    from facedata.embed import fixed_batches
    from facedata.embed.dlib_resnet import DlibResNetEmbedder
    from facedata.faces.align import apply, similarity_transform, template
    from facedata.imageio import read_image_file

    residual = []
    for r in rows:
        pts = np.asarray(r["landmarks"], dtype=np.float64).reshape(5, 2)
        dst = template(r["align_template"], r["crop_size"], r["detector"])
        fitted = apply(similarity_transform(pts, dst), pts)
        residual.append(float(np.sqrt(((fitted - dst) ** 2).sum(1).mean())) / r["crop_size"])
    crops = np.stack([read_image_file(root / r["crop_path"]).rgb for r in rows])
    net = DlibResNetEmbedder("cpu").net
    norms, flips = [], []
    with torch.inference_mode(), inference_threads("cpu"):
        for chunk, n in fixed_batches(crops):
            x = torch.from_numpy(chunk)
            a, b = net(x)[:n], net(x.flip(2))[:n]
            norms.append(a.norm(dim=1).numpy())
            flips.append(torch.nn.functional.cosine_similarity(a, b).numpy())
    return {
        "score": np.array([r["score"] for r in rows], dtype=np.float64),
        "template_residual": np.array(residual),
        "raw_norm": np.concatenate(norms).astype(np.float64),
        "flip_consistency": np.concatenate(flips).astype(np.float64),
    }


def _ok_faces(root: Path) -> list[dict]:
    from facedata import manifest

    return [r for r in manifest.read("faces", root).to_pylist() if r["status"] == "ok"]


def _dropped(values: np.ndarray, cut: float, low_is_bad: bool) -> np.ndarray:
    return values <= cut if low_is_bad else values >= cut


def main(argv: list[str]) -> dict:
    from facedata.cluster.evaluate import in_split
    from facedata.params import defaults
    from facedata.pipeline.evalcache import cache_project_for, prepare, prepare_video

    ap = argparse.ArgumentParser(prog="python -m benchmarks nonface --")
    ap.add_argument("--cache-dir", default=None, help="evaluation cache (see facedata evaluate clustering)")
    ap.add_argument("--webfaces", default=str(REPO.parent / "shared" / "data" / "faces" / "webfaces"))
    ap.add_argument("--lfw", default=str(REPO.parent / "shared" / "data" / "faces" / "lfw"))
    ap.add_argument("--lfw-sample", type=int, default=1500, help="faces of the LFW tune half (seeded sample)")
    ap.add_argument("--video", default=str(REPO.parent / "shared" / "data" / "video" / "short_hamilton_clip.mp4"))
    ap.add_argument("--video-labels", default=str(REPO / "benchmarks" / "data" / "hamilton_faces.csv"))
    ap.add_argument("--max-loss", type=float, default=0.005, help="share of tuning faces a gate may drop")
    args = ap.parse_args(argv)
    cache = Path(args.cache_dir) if args.cache_dir else None
    p = defaults()

    # Tuning faces: webfaces (all people) and a sample of the LFW tune half (split seed 0).
    tuning: dict[str, np.ndarray] = {}
    for name, folder in (("webfaces", args.webfaces), ("lfw_tune", args.lfw)):
        prepare(folder, p, cache)
        root = cache_project_for(Path(folder), cache)
        rows = _ok_faces(root)
        if name == "lfw_tune":
            from facedata import manifest

            label = {r["image_id"]: r["label"] for r in manifest.read("images", root).to_pylist()}
            rows = [r for r in rows if label.get(r["image_id"]) and in_split(label[r["image_id"]], "tune", 0)]
            pick = np.random.default_rng(0).permutation(len(rows))[: args.lfw_sample]
            rows = [rows[i] for i in sorted(pick)]
        sig = _signals(root, rows)
        tuning = {k: np.concatenate([tuning.get(k, np.zeros(0)), v]) for k, v in sig.items()}
        print(f"{name}: {len(rows)} faces", flush=True)

    # Test faces: the labelled faces of the Hamilton clip (10 fps, near-identical frames kept).
    pv = defaults()
    pv["ingest"].update(video_fps=10.0, video_dup_bits=-1)
    lf = prepare_video(Path(args.video), Path(args.video_labels), pv, cache)
    root = cache_project_for(Path(args.video), cache)
    by_id = {r["face_id"]: r for r in _ok_faces(root)}
    labelled = [(lf.labels[i], lf.faces.face_ids[r]) for i, r in enumerate(lf.rows) if r is not None]
    rows = [by_id[fid] for _, fid in labelled]
    test = _signals(root, rows)
    nonface = np.array([label.startswith("not_a_face") for label, _ in labelled])

    out: dict = {
        "n_tuning_faces": int(tuning["score"].size),
        "n_hamilton_faces": int(nonface.size - nonface.sum()),
        "n_hamilton_nonfaces": int(nonface.sum()),
        "max_loss": args.max_loss,
        "signals": {},
    }
    for key, low in LOW_IS_BAD.items():
        t, v = tuning[key], test[key]
        cut = float(np.quantile(t, args.max_loss if low else 1.0 - args.max_loss))
        worst = float(v[nonface].max() if low else v[nonface].min())  # the cut that drops every non-face
        out["signals"][key] = {
            "nonface_values": [round(float(x), 4) for x in v[nonface]],
            "real_face_range": [round(float(v[~nonface].min()), 4), round(float(v[~nonface].max()), 4)],
            "tuned_cut": round(cut, 4),
            "tuned_cut_drops_nonfaces": int(_dropped(v[nonface], cut, low).sum()),
            "tuned_cut_drops_real_faces": int(_dropped(v[~nonface], cut, low).sum()),
            "cut_dropping_every_nonface": round(worst, 4),
            "which_drops_real_hamilton_faces": int(_dropped(v[~nonface], worst, low).sum()),
            "which_drops_tuning_share": round(float(_dropped(t, worst, low).mean()), 4),
        }
        s = out["signals"][key]
        print(
            f"{key}: tuned cut {s['tuned_cut']} drops {s['tuned_cut_drops_nonfaces']}/{nonface.sum()} non-faces, "
            f"{s['tuned_cut_drops_real_faces']} real; dropping every non-face costs "
            f"{s['which_drops_real_hamilton_faces']} real Hamilton faces, "
            f"{s['which_drops_tuning_share']:.2%} of tuning faces",
            flush=True,
        )
    return out
