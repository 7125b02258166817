"""Faces of consecutive analysed frames linked into tracks: one person's continuous appearance.

A detection joins an active track (one seen within `max_gap_s`) when, in the same shot, its box overlaps the
track's last box (IoU >= `min_iou`) and the faces look alike (cosine >= `link_similarity`), or, after a short
occlusion or a quick move, when they clearly look alike (cosine >= `rejoin_similarity`) whatever the boxes do.
Across a shot cut only a clear match (cosine >= `cut_similarity`) continues a track: a cut to another person
standing where the last one stood must not chain them. Each frame's links are one-to-one, chosen by the
Hungarian method on overlap + similarity, so two faces of one frame never share a track.

The track's look is the mean of its last `RECENT` face vectors, which follows slow changes (pose, light) while
staying robust to one bad crop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facedata.cluster.constraints import iou
from facedata.embed import l2_normalize

RECENT = 5
_BLOCKED = -1e9


@dataclass(frozen=True)
class TrackSettings:
    min_iou: float
    link_similarity: float
    rejoin_similarity: float
    cut_similarity: float
    max_gap_s: float
    sure_iou: float  # a one-to-one overlap this large continues a track without an embedding...
    verify_s: float  # ...unless the track's last embedded face is older than this
    period_s: float  # time between analysed frames
    embed_per_track: int  # at the end, embed up to this many more of each track's best faces


@dataclass
class Observation:
    frame: int
    t: float
    shot: int
    box: np.ndarray  # x1, y1, x2, y2 in frame pixels
    score: float  # detector
    quality: float  # facedata.faces.quality.combined_quality
    ok: bool  # passed the detect quality filters
    crop: np.ndarray | None = None  # aligned crop, kept until embedded (or dropped as not among the best)
    views: list[np.ndarray] | None = None  # extra aligned crops (`embed.align_views`, `embed.jitter`)
    embedding: np.ndarray | None = None  # unit vector, once embedded


@dataclass
class Track:
    number: int  # in order of creation
    obs: list[Observation] = field(default_factory=list)
    thumb: np.ndarray | None = None  # RGB crop around the best-quality face
    thumb_quality: float = -1.0
    last_embedded: float = -1e9  # time of the newest embedded face

    @property
    def start(self) -> float:
        return self.obs[0].t

    @property
    def end(self) -> float:
        return self.obs[-1].t

    @property
    def frames(self) -> list[int]:
        return [o.frame for o in self.obs]

    @property
    def embedded(self) -> list[Observation]:
        return [o for o in self.obs if o.embedding is not None]

    def look(self) -> np.ndarray:
        recent = self.embedded[-RECENT:]
        return l2_normalize(np.mean([o.embedding for o in recent], axis=0)[None])[0]


def thumbnail(rgb: np.ndarray, box: np.ndarray, side: int = 112, margin: float = 0.3) -> np.ndarray:
    """A square crop around `box`, `margin` of its size added on each side, resized to `side` px."""
    import cv2

    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    s = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    a, b = int(max(0, cx - s / 2)), int(max(0, cy - s / 2))
    c, d = int(min(w, cx + s / 2)), int(min(h, cy + s / 2))
    if c <= a or d <= b:
        return np.zeros((side, side, 3), np.uint8)
    return cv2.resize(rgb[b:d, a:c], (side, side), interpolation=cv2.INTER_AREA)


Embedder = Callable[[list[Observation]], None]  # fills `.embedding` from `.crop`


class Tracker:
    """Online: `update` once per analysed frame, in order; `finish` when done.

    Embeddings are the expensive part (detection is a few ms a frame with YuNet, a face embedding tens), so a
    face is embedded only when its link is in doubt: a face whose box overlaps exactly one track's last box by
    `sure_iou` or more, one analysed frame later, in the same shot, continues that track without one, unless
    the track has not been checked against an embedding for `verify_s` seconds. At the end each track gets
    up to `embed_per_track` more of its best faces embedded, which its identity is computed from."""

    def __init__(self, settings: TrackSettings) -> None:
        self.s = settings
        self.tracks: list[Track] = []
        self._active: list[Track] = []

    def update(
        self, t: float, shot: int, faces: list[Observation], embed: Embedder, rgb: np.ndarray | None = None
    ) -> None:
        from scipy.optimize import linear_sum_assignment

        s = self.s
        self._active = [tr for tr in self._active if t - tr.end <= s.max_gap_s + 1e-9]
        assigned: dict[int, Track] = {}
        if self._active and faces:
            overlap = iou(np.stack([tr.obs[-1].box for tr in self._active]), np.stack([f.box for f in faces]))
            linked = overlap >= s.min_iou
            for i, tr in enumerate(self._active):
                js = np.flatnonzero(linked[i])
                if (
                    len(js) == 1
                    and overlap[i, js[0]] >= s.sure_iou
                    and linked[:, js[0]].sum() == 1
                    and tr.obs[-1].shot == shot
                    and t - tr.end <= 1.5 * s.period_s
                    and t - tr.last_embedded < s.verify_s
                ):
                    assigned[int(js[0])] = tr
        rest = [j for j in range(len(faces)) if j not in assigned]
        if rest:
            embed([faces[j] for j in rest])
            free = [tr for tr in self._active if all(tr is not a for a in assigned.values())]
            if free:
                aff = self._affinity(free, [faces[j] for j in rest], shot)
                rows, cols = linear_sum_assignment(-aff)
                for i, j in zip(rows, cols, strict=True):
                    if aff[i, j] > _BLOCKED / 2:
                        assigned[rest[int(j)]] = free[int(i)]
        for j, ob in enumerate(faces):
            tr = assigned.get(j)
            if tr is None:
                tr = Track(len(self.tracks))
                self.tracks.append(tr)
                self._active.append(tr)
            tr.obs.append(ob)
            if ob.embedding is not None:
                ob.crop = ob.views = None
                tr.last_embedded = t
            if rgb is not None and ob.quality > tr.thumb_quality:
                tr.thumb, tr.thumb_quality = thumbnail(rgb, ob.box), ob.quality
            self._prune(tr)

    def _prune(self, tr: Track) -> None:
        """Keep the crops of only the `embed_per_track` best faces not embedded yet (memory stays bounded)."""
        waiting = [o for o in tr.obs if o.crop is not None]
        if len(waiting) > self.s.embed_per_track:
            for o in sorted(waiting, key=lambda o: -o.quality)[self.s.embed_per_track :]:
                o.crop = o.views = None

    def finish(self, embed: Embedder) -> list[Track]:
        """Embed each track's best waiting faces; returns every track."""
        waiting = [o for tr in self.tracks for o in tr.obs if o.crop is not None]
        if waiting:
            embed(waiting)
            for o in waiting:
                o.crop = o.views = None
        return self.tracks

    def _affinity(self, tracks: list[Track], faces: list[Observation], shot: int) -> np.ndarray:
        """Track x face: overlap + similarity where a link is allowed, `_BLOCKED` where it is not."""
        s = self.s
        looks = np.stack([tr.look() for tr in tracks])
        sim = looks @ np.stack([f.embedding for f in faces]).T
        overlap = iou(np.stack([tr.obs[-1].box for tr in tracks]), np.stack([f.box for f in faces]))
        same_shot = np.array([tr.obs[-1].shot == shot for tr in tracks])[:, None]
        within = ((overlap >= s.min_iou) & (sim >= s.link_similarity)) | (sim >= s.rejoin_similarity)
        allowed = np.where(same_shot, within, sim >= s.cut_similarity)
        return np.where(allowed, overlap + sim, _BLOCKED)


def cooccurring(tracks: list[Track]) -> np.ndarray:
    """(p, 2) pairs of track positions with a face in the same frame: on screen together, so two people."""
    by_frame: dict[int, list[int]] = {}
    for k, tr in enumerate(tracks):
        for f in set(tr.frames):
            by_frame.setdefault(f, []).append(k)
    pairs = {(a, b) for ks in by_frame.values() for i, a in enumerate(ks) for b in ks[i + 1 :]}
    return np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)
