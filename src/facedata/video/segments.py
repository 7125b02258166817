"""From named tracks to segments: each identity's on-screen time as [start, end) ranges.

Tracks of one identity closer than `merge_gap_s` (a cut to a reaction shot and back, a missed detection)
make one segment; its confidence is the duration-weighted mean of its tracks'. Segments shorter than
`min_duration_s` or less confident than `min_confidence` are dropped: a flash of a face is not an
appearance a user would search for.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Segment:
    identity: str
    start: float
    end: float
    confidence: float
    track_ids: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.end - self.start


def build_segments(
    spans: list[tuple[str, float, float, float, str]],
    merge_gap_s: float,
    min_duration_s: float,
    min_confidence: float,
) -> list[Segment]:
    """`spans`: (identity, start, end, confidence, track_id) per named track. Sorted by identity, start."""
    out: list[Segment] = []
    weights: list[float] = []
    for ident, start, end, conf, tid in sorted(spans):
        dur = max(end - start, 1e-6)
        if out and out[-1].identity == ident and start - out[-1].end <= merge_gap_s:
            seg = out[-1]
            seg.confidence = (seg.confidence * weights[-1] + conf * dur) / (weights[-1] + dur)
            weights[-1] += dur
            seg.end = max(seg.end, end)
            seg.track_ids.append(tid)
        else:
            out.append(Segment(ident, start, end, conf, [tid]))
            weights.append(dur)
    return [s for s in out if s.duration >= min_duration_s and s.confidence >= min_confidence]
