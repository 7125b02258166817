"""Who is on screen: segment precision/recall in time and track clustering, on videos with ground truth.

    python -m benchmarks video [-- --people 8 --strangers 4 --webfaces 10 --fps 2 --detector yunet --max-side 960]
    python -m benchmarks video -- --tune-only --fps 1      # compare settings on the tune videos only

1. Synthetic broadcast (`facedata.video.synthetic`): labelled photos assembled into shots of 3 s (one person,
   two people side by side, people who are not in the gallery; faces of 35-90 px, a third of the shots out of
   focus), each person's gallery made of *other* photos of them. Tune videos: LFW's tune half (people split
   in halves by a seeded hash of the name) and `--webfaces N` videos from `webfaces` (varied web photos:
   profiles, expressions, lighting; 6 gallery people and 6 strangers drawn per seed, photos framed round the
   face as LFW's are). The gallery threshold (best mean segment F1) and the confidence slope are chosen on
   the tune videos only, then measured on LFW's test half.
2. The Hamilton clip (`../shared/data/video/short_hamilton_clip.mp4`) with `known_people/` as the gallery:
   segments against who is on screen shot by shot (`benchmarks/data/hamilton_on_screen.csv`), tracks
   against the hand-labelled faces (`benchmarks/data/hamilton_faces.csv`; see benchmarks/data/README.md).

Reported per video: time-based precision / recall / F1 of segments (micro over identities, and per
identity), track clustering (purity, inverse purity, BCubed F, NMI, predicted vs true people), the share of
unknown people's tracks left `unknown`, and speed (models loaded before timing): video seconds per processing
second (wall clock), and process CPU seconds per video second with the load average around the run, since the
machines these run on are shared and wall-clock speed says more about the neighbours than about facedata.
The reference, measured in the same run at the same threshold: every face embedded and named on its own, the
matches merged into segments by the same rules (what a client of a face-search API does).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEDATA_SHARED", REPO.parent / "shared"))
os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))


def lfw_people(min_images: int) -> dict[str, list[Path]]:
    root = SHARED / "data" / "faces" / "lfw"
    out = {}
    for d in sorted(root.iterdir()):
        if d.is_dir():
            files = sorted(d.glob("*.jpg"))
            if len(files) >= min_images:
                out[d.name] = files
    return out


def build_case(split: str, n_people: int, n_strangers: int, tmp: Path, seed: int = 0):
    """(video path, gallery dir, appearances, gallery people, strangers) for one half of LFW's people."""
    from facedata.cluster.evaluate import in_split

    people = [p for p in lfw_people(8).items() if in_split(p[0], split, seed)]
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(people))[: n_people + n_strangers]
    cast = [people[i] for i in pick[:n_people]]
    strangers = [people[i] for i in pick[n_people:]]
    return assemble_case(cast, strangers, rng, tmp / f"lfw_{split}", lambda f: str(f))


def webfaces_case(n_people: int, n_strangers: int, tmp: Path, seed: int, params: dict):
    """A tune video from `webfaces` (varied web photos: profiles, expressions, lighting), people drawn by
    `seed`. Shots show each photo framed round its face as LFW photos are (the face ~45% of the frame); the
    gallery holds whole photos, as a user's does."""
    root = SHARED / "data" / "faces" / "webfaces"
    people = [
        (d.name, sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png")))
        for d in sorted(root.iterdir())
        if d.is_dir()
    ]
    rng = np.random.default_rng(1000 + seed)
    pick = rng.permutation(len(people))[: n_people + n_strangers]
    people = [(people[i][0], [people[i][1][j] for j in rng.permutation(len(people[i][1]))]) for i in pick]
    out = tmp / f"webfaces_{seed}"
    framed = frame_faces([f for _, files in people for f in files[:8]], out / "framed", params)
    people = [(name, [f for f in files[:8] if f in framed]) for name, files in people]
    return assemble_case(people[:n_people], people[n_people:], rng, out, lambda f: framed[f])


def frame_faces(files: list[Path], out: Path, params: dict) -> dict[Path, str]:
    """Square crops of side `PICK_MARGIN` x the primary face's box round it (the framing a named video face is
    stored with; edges replicated, so every crop stays square), per photo with a usable face."""
    import cv2

    from facedata.collect.video import PICK_MARGIN as margin
    from facedata.faces.analyze import analyze_files

    out.mkdir(parents=True, exist_ok=True)
    framed = {}
    for k, (f, res) in enumerate(zip(files, analyze_files(files, params["detect"], None, 1), strict=True)):
        face = next((x for x in res.faces if x.is_primary and x.ok), None)
        if face is None:
            continue
        img = cv2.imread(str(f))
        x1, y1, x2, y2 = face.box
        half = margin * max(x2 - x1, y2 - y1) / 2
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        a, b = int(round(cx - half)), int(round(cy - half))
        side = int(round(2 * half))
        pad = side
        big = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        crop = big[b + pad : b + pad + side, a + pad : a + pad + side]
        target = out / f"{k:04d}.jpg"
        cv2.imwrite(str(target), crop)
        framed[f] = str(target)
    return framed


def assemble_case(cast, strangers, rng, out: Path, photo):
    """Gallery (3 photos per cast member) and a video of 3 s shots: two of each cast member and one of each
    stranger with photos not in the gallery, and four two-person shots; `photo(file)` is what a shot shows."""
    from facedata.video.synthetic import Shot, write_video

    gallery = out / "gallery"
    for name, files in cast:
        (gallery / name).mkdir(parents=True, exist_ok=True)
        for f in files[:3]:
            (gallery / name / Path(f).name).symlink_to(f)

    def shot(*people):  # broadcast-like: faces of 35-90 px, some out of focus
        return Shot(3.0, people, side=int(rng.integers(80, 200)), blur=float(rng.choice([0, 0, 1.0, 2.0])))

    shots = []
    for name, files in cast:
        shots += [shot((name, photo(files[3]))), shot((name, photo(files[4])))]
    for name, files in strangers:
        shots.append(shot((name, photo(files[3]))))
    for k in range(4):
        a, b = cast[k % len(cast)], (cast[(k + 1) % len(cast)] if k % 2 else strangers[k % len(strangers)])
        shots.append(shot((a[0], photo(a[1][5])), (b[0], photo(b[1][5]))))
    order = rng.permutation(len(shots))
    shots = [shots[i] for i in order]
    video = out / "synthetic.mp4"
    truth = write_video(shots, video)
    return video, gallery, truth, [c[0] for c in cast], [s[0] for s in strangers]


def synthetic_truth(truth, result):
    """(true ranges per cast member, true label per track or None)."""
    from facedata.video.evaluate import majority

    ranges: dict[str, list] = {}
    for a in truth:
        ranges.setdefault(a.identity, []).append((a.start, a.end))
    labels = []
    for row in result.rows:
        got = []
        for f, box in zip(row["frames"], row["boxes"], strict=True):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            hit = [
                a.identity
                for a in truth
                if a.first_frame <= f <= a.last_frame
                and (r := a.rect_at(f))[0] <= cx <= r[2]
                and r[1] <= cy <= r[3]
            ]
            got.append(hit[0] if hit else None)
        labels.append(majority(got))
    return ranges, labels


def hamilton_truth(result):
    """(who is on screen when, shot by shot: `hamilton_on_screen.csv`; the hand-labelled person of each track
    by its faces: `hamilton_faces.csv`, or None)."""
    import csv

    from facedata.cluster.constraints import iou
    from facedata.cluster.evaluate import read_face_labels
    from facedata.video.evaluate import majority

    ranges: dict[str, list] = {}
    with open(REPO / "benchmarks" / "data" / "hamilton_on_screen.csv", newline="") as f:
        for row in csv.DictReader(f):
            ranges.setdefault(row["identity"], []).append((float(row["start"]), float(row["end"])))
    by_frame: dict[int, list] = {}
    for frame, box, label in read_face_labels(REPO / "benchmarks" / "data" / "hamilton_faces.csv"):
        by_frame.setdefault(frame, []).append((box, label))
    labels = []
    for row in result.rows:
        got = []
        for f, box in zip(row["frames"], row["boxes"], strict=True):
            cand = by_frame.get(f, [])
            ov = iou(np.array([b for b, _ in cand]).reshape(-1, 4), np.array(box))[:, 0] if cand else []
            got.append(cand[int(np.argmax(ov))][1] if len(ov) and max(ov) >= 0.5 else None)
        labels.append(majority(got))
    return ranges, labels


def score(result, ranges, labels, gallery_people, duration):
    from facedata.train.identify import UNKNOWN
    from facedata.video.evaluate import segment_scores, track_clustering

    pred: dict[str, list] = {}
    for s in result.segments:
        pred.setdefault(s.identity, []).append((s.start, s.end))
    truth = {k: v for k, v in ranges.items() if k in gallery_people}
    seg = segment_scores(pred, truth, duration)
    known = [(lab, r) for lab, r in zip(labels, result.rows, strict=True) if lab is not None]
    predicted = [r["identity"] if r["identity"] != UNKNOWN else f"cand:{r['candidate']}" for _, r in known]
    clus = track_clustering([lab for lab, _ in known], predicted)
    strangers = [r for lab, r in known if lab not in gallery_people]
    named_right = [r["identity"] == lab for lab, r in known if lab in gallery_people]
    return {
        "segments": seg,
        "track_clustering": clus,
        "unknown_kept_unknown": round(np.mean([r["identity"] == UNKNOWN for r in strangers]), 4)
        if strangers
        else None,
        "cast_tracks_named_right": round(float(np.mean(named_right)), 4) if named_right else None,
        "n_tracks": len(result.rows),
    }


def per_frame_reference(params, gallery, video, threshold: float, slope: float) -> dict:
    """The reference: every face embedded and named on its own (a face-search API's timestamped matches,
    which the client merges into segments with the same gap, duration and confidence rules)."""
    from facedata.video.index import VideoIndexer
    from facedata.video.naming import calibrated
    from facedata.video.segments import build_segments

    v = {**params["video"], "sure_iou": 1.01, "embed_per_track": 10**6}
    gallery.threshold = threshold
    indexer = VideoIndexer({**params, "video": v}, gallery)
    t0 = time.perf_counter()
    result = indexer.index(video)
    secs = time.perf_counter() - t0
    faces = [o for tr in result.tracks for o in tr.obs]
    names, cos = gallery.name(np.stack([o.embedding for o in faces])) if faces else ([], [])
    period, dur = 1.0 / v["fps"], result.info.seconds
    spans = [
        (n, o.t, min(o.t + period, dur), float(calibrated(c, threshold, slope)), f"f{o.frame}")
        for o, n, c in zip(faces, names, cos, strict=True)
        if n != "unknown"
    ]
    segments = build_segments(spans, v["merge_gap_s"], v["min_segment_s"], v["min_confidence"])
    return {"segments": segments, "seconds": secs, "embedded": len(faces), "video_seconds": dur}


def reference_scores(ref: dict, ranges, gallery_people) -> dict:
    from facedata.video.evaluate import segment_scores

    pred: dict[str, list] = {}
    for s in ref["segments"]:
        pred.setdefault(s.identity, []).append((s.start, s.end))
    seg = segment_scores(pred, {k: v for k, v in ranges.items() if k in gallery_people}, ref["video_seconds"])
    return {
        "segments": {k: seg[k] for k in ("precision", "recall", "f1")},
        "speed_x_realtime": round(ref["video_seconds"] / ref["seconds"], 3),
        "embedded": ref["embedded"],
    }


def reidentify(indexer, result, threshold: float, slope: float):
    indexer.gallery.threshold = threshold
    indexer.v = {**indexer.v, "confidence_slope": slope}
    return indexer._identify(result.info, result.tracks)


def calibration(indexer, result, labels, gallery_people, threshold):
    """(cosine - threshold, correct) per track with a known person: a named track is correct when the name is
    right, an unknown one when the person is not in the gallery."""
    from facedata.train.identify import UNKNOWN

    res = reidentify(indexer, result, threshold, 1.0)
    xs, ys, ns = [], [], []
    for lab, row in zip(labels, res.rows, strict=True):
        if lab is None:
            continue
        named = row["identity"] != UNKNOWN
        xs.append(row["score"] - threshold)
        ys.append(row["identity"] == lab if named else lab not in gallery_people)
        ns.append(named)
    return np.array(xs), np.array(ys, dtype=float), np.array(ns, dtype=bool)


def fit_slope(x: np.ndarray, correct: np.ndarray, named: np.ndarray) -> float:
    """The slope minimising log loss of the confidence the index reports (named: p(x); unknown: 1 - p(x))."""
    best, best_loss = 1.0, math.inf
    for slope in np.geomspace(1, 400, 200):
        p = 1 / (1 + np.exp(-slope * x))
        conf = np.clip(np.where(named, p, 1 - p), 1e-6, 1 - 1e-6)
        loss = -np.mean(correct * np.log(conf) + (1 - correct) * np.log(1 - conf))
        if loss < best_loss:
            best, best_loss = float(slope), loss
    return best


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = 5) -> float:
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = (conf >= a) & (conf < b if b < 1 else conf <= b)
        if m.any():
            total += m.sum() * abs(conf[m].mean() - correct[m].mean())
    return round(total / max(len(conf), 1), 4)


def timed(indexer, video, **kwargs) -> tuple:
    """Index `video` (models already loaded); (result, speed: wall-clock x real time, process CPU seconds per
    video second, 1-minute load average before and after)."""
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    result = indexer.index(video, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    secs = max(result.info.seconds, 1e-9)
    return result, {
        "speed_x_realtime": round(secs / wall, 3),
        "cpu_s_per_video_s": round(cpu / secs, 4),
        "load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def looped(video: Path, times: int, out: Path) -> Path:
    """`video` played `times` times over as one file (mp4v): a longer real clip, so speed is measured with the
    pipeline full rather than mostly starting and stopping (an hour of video is the use case)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(3)), int(cap.get(4)))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for _ in range(times):
        for frame in frames:
            writer.write(frame)
    writer.release()
    return out


def embedding_ahead_speed(params: dict, runs: int, video: Path) -> dict:
    """The Hamilton clip indexed `runs` times in each of three ways, alternated: as shipped (the next batch
    detected while this one's faces are embedded, and the faces the tracker will embed embedded ahead per
    detector batch), with detection in line (the reference for detecting ahead), and with faces embedded frame
    by frame as the tracker asks (the reference for embedding ahead). Medians of CPU seconds per video second,
    wall-clock speed, and embedder batches (FORWARD_BATCH crops each; with `embed.flip` each is two passes,
    the crops and their mirror images). Tracks, names and vectors must come out the same every way."""
    from facedata.embed import FORWARD_BATCH
    from facedata.train.identify import from_folder
    from facedata.video import index as vindex

    g = from_folder(SHARED / "data" / "video" / "known_people", params["detect"], params["embed"], 0.93, 1)
    indexer = vindex.VideoIndexer(params, g)
    embedder = indexer.analyzer.embedder
    real_embed, real_ahead = embedder.embed, vindex.must_embed
    passes = [0]

    def counting(crops):
        passes[0] += math.ceil(len(crops) / FORWARD_BATCH)
        return real_embed(crops)

    embedder.embed = counting
    indexer.index(video)  # warm-up
    out: dict = {}
    first: list = []
    try:
        for mode in ("shipped", "detect_in_line", "embed_frame_by_frame") * runs:
            vindex.must_embed = (lambda *a: []) if mode == "embed_frame_by_frame" else real_ahead
            passes[0] = 0
            result, speed = timed(indexer, video, detect_ahead=mode != "detect_in_line")
            tracks = [(row["frames"], row["identity"], row["vector"]) for row in result.rows]
            first = first if out else tracks
            assert tracks == first, f"tracks differ when run {mode}"
            out.setdefault(mode, {"runs": [], "n_tracks": len(tracks)})["runs"].append(
                {**speed, "embed_batches": passes[0]}
            )
    finally:
        vindex.must_embed, embedder.embed = real_ahead, real_embed
    for r in out.values():
        for k in ("cpu_s_per_video_s", "speed_x_realtime", "embed_batches"):
            r[f"median_{k}"] = float(np.median([x[k] for x in r["runs"]]))
    return out


def main(argv: list[str]) -> dict:
    from facedata.params import defaults
    from facedata.train.identify import from_folder
    from facedata.video.index import VideoIndexer

    ap = argparse.ArgumentParser(prog="python -m benchmarks video")
    ap.add_argument("--people", type=int, default=8, help="gallery people per half")
    ap.add_argument("--strangers", type=int, default=4, help="people not in the gallery per half")
    ap.add_argument("--fps", type=float, default=None, help="video.fps (default: the params default)")
    ap.add_argument("--detector", default=None, help="video.detector (default: the params default)")
    ap.add_argument("--max-side", type=int, default=None, help="video.max_side (default: the params default)")
    ap.add_argument(
        "--align-views", default=None, help="embed.align_views, comma-separated (gallery and video faces alike)"
    )
    ap.add_argument(
        "--tune-only", action="store_true", help="only the tune videos, no reference: for choosing settings"
    )
    ap.add_argument(
        "--webfaces",
        type=int,
        default=10,
        metavar="N",
        help="tune videos from webfaces besides LFW's tune half (6 gallery people and 6 strangers each, drawn "
        "by seeds 0..N-1)",
    )
    ap.add_argument(
        "--speed-only",
        type=int,
        default=0,
        metavar="N",
        help="only speed, on the Hamilton clip and on it played 8 times over (73 s): N runs each as shipped, "
        "with detection in line, and with faces embedded frame by frame",
    )
    args = ap.parse_args(argv)
    params = defaults()
    if args.fps:
        params["video"]["fps"] = args.fps
    if args.detector:
        params["video"]["detector"] = args.detector
    if args.max_side is not None:
        params["video"]["max_side"] = args.max_side
    if args.align_views is not None:
        params["embed"]["align_views"] = [v for v in args.align_views.split(",") if v]
    out: dict = {
        "params": {
            **{k: params["video"][k] for k in ("fps", "detector", "max_side")},
            "align_views": params["embed"]["align_views"],
        },
        "load": os.getloadavg(),
    }
    if args.speed_only:
        hamilton = SHARED / "data" / "video" / "short_hamilton_clip.mp4"
        out["hamilton_speed"] = embedding_ahead_speed(params, args.speed_only, hamilton)
        with tempfile.TemporaryDirectory() as tmp:
            long = looped(hamilton, 8, Path(tmp) / "hamilton_x8.mp4")
            out["hamilton_x8_speed"] = embedding_ahead_speed(params, args.speed_only, long)
        return out
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = {"lfw_tune": build_case("tune", args.people, args.strangers, tmp)}
        for seed in range(args.webfaces):
            cases[f"webfaces_{seed}"] = webfaces_case(6, 6, tmp, seed, params)
        if not args.tune_only:
            cases["lfw_test"] = build_case("test", args.people, args.strangers, tmp)
        runs = {}
        for name, (video, gdir, truth, cast, _) in cases.items():
            g = from_folder(gdir, params["detect"], params["embed"], 0.9, workers=1)
            indexer = VideoIndexer(params, g)
            result, speed = timed(indexer, video)
            ranges, labels = synthetic_truth(truth, result)
            runs[name] = (indexer, result, ranges, labels, cast, speed)
        # Tune on every video but the test half's: the threshold with the best mean segment F1 (the median of
        # the thresholds reaching it), then the confidence slope over all their tracks.
        tune = [name for name in runs if name != "lfw_test"]
        sweep = []
        for thr in np.round(np.arange(0.80, 0.985, 0.005), 3):
            f1 = []
            for name in tune:
                indexer, result, ranges, labels, cast, _ = runs[name]
                res = reidentify(indexer, result, float(thr), 60.0)
                f1.append(score(res, ranges, labels, cast, result.info.seconds)["segments"]["f1"])
            sweep.append((round(float(np.mean(f1)), 4), float(thr)))
        best_f1 = max(f for f, _ in sweep)
        threshold = float(np.median([t for f, t in sweep if f == best_f1]))
        parts = [calibration(*[runs[n][i] for i in (0, 1, 3, 4)], threshold) for n in tune]
        x, correct, named = (np.concatenate([q[i] for q in parts]) for i in range(3))
        slope = fit_slope(x, correct, named)
        out["tuned"] = {
            "on": tune,
            "threshold": threshold,
            "tune_mean_f1": best_f1,
            "confidence_slope": round(slope, 2),
            "sweep": {t: f for f, t in sweep},
        }
        for name, (indexer, result, ranges, labels, cast, speed) in runs.items():
            res = reidentify(indexer, result, threshold, slope)
            r = score(res, ranges, labels, cast, result.info.seconds)
            x, correct, named = calibration(indexer, result, labels, cast, threshold)
            p = 1 / (1 + np.exp(-slope * x))
            r["confidence_ece"] = ece(np.where(named, p, 1 - p), correct)
            r.update(speed)
            r["video_seconds"] = round(result.info.seconds, 2)
            r["faces"], r["embedded"] = result.n_faces, result.n_embedded
            r["label"] = "held out" if name == "lfw_test" else "tuned on this video"
            if name in ("lfw_tune", "lfw_test") and not args.tune_only:
                ref = per_frame_reference(params, indexer.gallery, cases[name][0], threshold, slope)
                r["reference_per_frame"] = reference_scores(ref, ranges, cast)
            out[f"synthetic_{name}"] = r
        # The Hamilton clip, at the tuned settings.
        video = SHARED / "data" / "video" / "short_hamilton_clip.mp4"
        if video.is_file() and not args.tune_only:
            g = from_folder(
                SHARED / "data" / "video" / "known_people", params["detect"], params["embed"], threshold, 1
            )
            indexer = VideoIndexer({**params, "video": {**params["video"], "confidence_slope": slope}}, g)
            result, speed = timed(indexer, video)
            ranges, labels = hamilton_truth(result)
            r = score(result, ranges, labels, g.classes, result.info.seconds)
            r["segments_found"] = [
                (s.identity, round(s.start, 2), round(s.end, 2), round(s.confidence, 3)) for s in result.segments
            ]
            r.update(speed)
            r["faces"], r["embedded"] = result.n_faces, result.n_embedded
            ref = per_frame_reference(params, g, video, threshold, slope)
            r["reference_per_frame"] = reference_scores(ref, ranges, g.classes)
            out["hamilton"] = r
    return out
