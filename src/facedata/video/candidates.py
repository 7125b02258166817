"""People seen in video whom the gallery does not know: the index's candidate people (its unknown tracks,
grouped by `facedata.video.naming.cluster_unknown`), and the frames that show one of them best.

`facedata review` lists them as unnamed clusters; naming one adds its best frames to the project as a video
source (`facedata.review.video`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facedata.train.identify import UNKNOWN
from facedata.video.index import TRACKS, read_index


@dataclass
class Candidate:
    candidate: str  # "<video id[:8]>-pNNN"
    video_id: str  # sha256 of the video file
    video_path: str  # as given to `facedata index-video`
    tracks: list[dict]  # its video_tracks rows, in time order

    @property
    def track_ids(self) -> list[str]:
        return [t["track_id"] for t in self.tracks]

    @property
    def spans(self) -> list[tuple[float, float]]:
        """When the person is on screen: the tracks' time ranges, overlapping ones merged."""
        out: list[list[float]] = []
        for t in sorted(self.tracks, key=lambda t: t["start"]):
            if out and t["start"] <= out[-1][1]:
                out[-1][1] = max(out[-1][1], t["end"])
            else:
                out.append([t["start"], t["end"]])
        return [(a, b) for a, b in out]

    @property
    def seconds(self) -> float:
        return sum(b - a for a, b in self.spans)

    @property
    def n_faces(self) -> int:
        return sum(int(t["n_faces"]) for t in self.tracks)


def load(index_dir: str | Path) -> list[Candidate]:
    """The index folder's candidate people, longest on screen first (none when nothing is indexed)."""
    rows = read_index(index_dir, TRACKS).to_pylist()
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["identity"] == UNKNOWN and r["candidate"]:
            groups.setdefault(r["candidate"], []).append(r)
    out = [
        Candidate(c, ts[0]["video_id"], ts[0]["video_path"], sorted(ts, key=lambda t: (t["start"], t["track_id"])))
        for c, ts in groups.items()
    ]
    return sorted(out, key=lambda c: (-c.seconds, c.candidate))


def best_frames(tracks: list[dict], n: int, spacing_s: float) -> list[tuple[int, str]]:
    """Up to `n` (frame number, track id), in frame order: every track's best face first (by quality), then
    the next best of each in turn, never two frames of one track closer than `spacing_s` (they would be
    near-identical)."""
    queues = []
    for t in tracks:
        order = sorted(range(len(t["frames"])), key=lambda k: (-t["qualities"][k], t["frames"][k]))
        queues.append((t, order))
    queues.sort(key=lambda q: (-q[0]["qualities"][q[1][0]] if q[1] else 0.0, q[0]["track_id"]))
    picked: list[tuple[int, str]] = []
    taken: dict[str, list[float]] = {}
    pos = [0] * len(queues)
    while len(picked) < n and any(p < len(q[1]) for p, q in zip(pos, queues, strict=True)):
        for i, (t, order) in enumerate(queues):
            while pos[i] < len(order) and len(picked) < n:
                k = order[pos[i]]
                pos[i] += 1
                ts = t["timestamps"][k]
                near = any(abs(ts - other) < spacing_s for other in taken.get(t["track_id"], []))
                if not near and all(f != t["frames"][k] for f, _ in picked):
                    taken.setdefault(t["track_id"], []).append(ts)
                    picked.append((int(t["frames"][k]), t["track_id"]))
                    break
    return sorted(picked)
