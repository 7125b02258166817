"""The run report of the 3D stage: a few renders (mesh overlays, landmark plots, a turntable of a fused mesh)
written as PNG/GIF files, and a markdown page embedding small copies of them, which the Prefect build flow
publishes as an artifact (`data/reports/<stage>/*.artifact.md`, see `facedata.flows.build`).
"""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np

from facedata import atomic
from facedata.recon3d import render
from facedata.recon3d.reconstruct import FaceResult, FusedResult


def _thumb_uri(rgb: np.ndarray, side: int = 220) -> str:
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(small[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def face_renders(image_rgb: np.ndarray, r: FaceResult, triangles: np.ndarray) -> dict[str, np.ndarray]:
    """{'overlay': mesh over the photo, 'landmarks': landmark plot with head axes and gaze}."""
    out = {}
    gaze = (r.gaze.yaw, r.gaze.pitch) if r.gaze is not None and r.gaze.status == "ok" else None
    out["landmarks"] = render.landmark_plot(image_rgb, r.fit.landmarks, r.fit.pose, gaze)
    if r.dense is not None:
        out["overlay"] = render.overlay(image_rgb, r.photo_vertices(), triangles)
    return out


def write_report(
    report_dir: Path,
    stage: str,
    faces: list[tuple[str, np.ndarray, FaceResult]],
    fused: list[tuple[str, FusedResult]],
    triangles: np.ndarray | None,
    uv: np.ndarray | None,
    turntable_frames: int,
    metrics: dict,
) -> dict:
    """Render `faces` ((label, photo, result)) and the first fused mesh; write the files and the artifact page.
    Returns what was written (or why rendering was skipped), for the stage metrics."""
    report_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"### facedata `{stage}`: 3D faces", ""]
    lines += [f"- {k}: {v}" for k, v in metrics.items() if isinstance(v, int | float | str)]
    written: list[str] = []
    try:
        cells = []
        for label, img, r in faces:
            pics = face_renders(img, r, triangles)
            for kind, pic in pics.items():
                path = report_dir / f"{label}_{kind}.png"
                render.write_png(path, pic)
                written.append(path.name)
            cells.append(
                " ".join(f"![{label} {k}]({_thumb_uri(p)})" for k, p in pics.items())
                + f"<br>`{label}` yaw {r.fit.pose[0]:.0f} pitch {r.fit.pose[1]:.0f} roll {r.fit.pose[2]:.0f}, "
                f"fit error {r.fit_error:.2f}%"
                + (
                    f", gaze {r.gaze.yaw:.0f}/{r.gaze.pitch:.0f}"
                    if r.gaze is not None and r.gaze.status == "ok"
                    else ""
                )
            )
        if cells:
            lines += ["", "#### Faces (mesh overlay, landmarks + head axes + gaze)", ""] + [
                f"{c}\n" for c in cells
            ]
        if fused and turntable_frames > 0:
            label, f = fused[0]
            frames = render.turntable(f.dense.vertices(None), triangles, uv, f.texture, frames=turntable_frames)
            gif = render.gif_bytes(frames)
            atomic.write_bytes(report_dir / f"{label}_turntable.gif", gif)
            render.write_png(report_dir / f"{label}_turntable_front.png", frames[len(frames) // 4])
            written += [f"{label}_turntable.gif", f"{label}_turntable_front.png"]
            small = render.gif_bytes(
                [cv2.resize(fr, (128, 128), interpolation=cv2.INTER_AREA) for fr in frames[::2]]
            )
            lines += [
                "",
                f"#### Fused mesh `{label}` ({len(f.views)} views), turntable",
                "",
                f"![turntable](data:image/gif;base64,{base64.b64encode(small).decode()})",
                "",
                "Error on each view, % of the face size. Held out: the fit fused from the *other* views, and",
                "those views' single fits (mean), each judged on a view it did not see.",
                "",
                "| view | fused fit (saw it) | held out: fused others | held out: single others |",
                "|---|---|---|---|",
            ]
            held = f.heldout_errors or [None] * len(f.view_errors)
            single = f.single_heldout_errors or [None] * len(f.view_errors)
            lines += [
                f"| {i} | {a:.3f} | {_pct(b)} | {_pct(c)} |"
                for i, (a, b, c) in enumerate(zip(f.view_errors, held, single, strict=True))
            ]
        status = {"renders": len(written), "render_files": written}
    except render.RenderUnavailable as exc:
        lines += ["", f"renders skipped: {exc}"]
        status = {"renders": len(written), "render_files": written, "render_error": str(exc)}
    atomic.write_text(report_dir / f"{stage}.artifact.md", "\n".join(lines) + "\n")
    return status


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
