"""Pictures of a video index: a timeline (one row per identity) and a thumbnail per track."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facedata import atomic

_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    atomic.write_bytes(path, buf.getvalue())


def timeline_png(
    path: Path,
    title: str,
    duration: float,
    rows: list[tuple[str, list[tuple[float, float, float]], list[tuple[float, float]]]],
    cuts: list[float],
    width: int = 1000,
) -> None:
    """`rows`: (identity, segments as (start, end, confidence), tracks as (start, end)). Segments are bars
    (darker = more confident), tracks thin lines under them, shot cuts grey verticals."""
    label_w, row_h, top, bottom = 180, 30, 30, 34
    h = top + row_h * max(1, len(rows)) + bottom
    img = Image.new("RGB", (width, h), "white")
    d = ImageDraw.Draw(img)
    span = max(duration, 1e-6)
    plot_w = width - label_w - 10

    def x(t: float) -> int:
        return label_w + int(round(plot_w * min(max(t, 0.0), span) / span))

    d.text((5, 8), f"{title}  ({duration:.1f} s)", fill="black")
    for c in cuts:
        d.line([(x(c), top), (x(c), h - bottom)], fill=(200, 200, 200))
    for k, (name, segs, tracks) in enumerate(rows):
        y = top + k * row_h
        colour = _PALETTE[k % len(_PALETTE)] if name != "unknown" else (120, 120, 120)
        d.text((5, y + 8), name[:28], fill="black")
        for s, e, conf in segs:
            a = 0.35 + 0.65 * float(np.clip(conf, 0, 1))
            fill = tuple(int(255 - a * (255 - c)) for c in colour)
            d.rectangle([x(s), y + 4, max(x(e), x(s) + 1), y + row_h - 10], fill=fill)
        for s, e in tracks:
            d.line([(x(s), y + row_h - 9), (max(x(e), x(s) + 1), y + row_h - 9)], fill=colour, width=2)
    step = max(1, int(np.ceil(span / 10)))
    for t in range(0, int(span) + 1, step):
        d.line([(x(t), h - bottom), (x(t), h - bottom + 4)], fill="black")
        d.text((x(t) - 4, h - bottom + 6), f"{t}s", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic.write_bytes(path, buf.getvalue())
