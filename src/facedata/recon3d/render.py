"""Pictures of the 3D results without pytorch3d: offscreen pyrender (EGL) mesh overlays on the photo, landmark
plots, and a turntable of a mesh (PNG frames + GIF).

pyrender needs `PYOPENGL_PLATFORM=egl` before OpenGL is first imported; this module sets it (unless the user
chose another platform) and imports pyrender only when a render is asked for. Without an EGL driver
(Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) rendering raises `RenderUnavailable` with that hint; the
landmark plots need only OpenCV. One renderer serves every size
(pyrender cannot hold two EGL renderers in one process), its viewport resized per picture.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import cv2
import numpy as np

from facedata import atomic

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

# iBUG-68 outline groups (index ranges) for drawing connected landmark lines; closed ones loop back
_GROUPS = (
    (0, 17, False),
    (17, 22, False),
    (22, 27, False),
    (27, 31, False),
    (31, 36, False),
    (36, 42, True),
    (42, 48, True),
    (48, 60, True),
    (60, 68, True),
)


class RenderUnavailable(RuntimeError):
    """Offscreen OpenGL rendering cannot start here (no EGL driver)."""


@functools.cache
def _shared_renderer():
    try:
        import pyrender

        return pyrender.OffscreenRenderer(256, 256)
    except Exception as exc:  # OpenGL/EGL failures come as many exception types
        raise RenderUnavailable(
            f"offscreen rendering (pyrender + EGL) is unavailable: {exc}. Install an EGL driver "
            "(Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) and keep PYOPENGL_PLATFORM=egl"
        ) from exc


def _renderer(width: int, height: int):
    r = _shared_renderer()
    r.viewport_width, r.viewport_height = int(width), int(height)
    return r


def _scene(vertices: np.ndarray, triangles: np.ndarray, uv=None, texture=None, colour=(0.75, 0.75, 0.78)):
    import pyrender
    import trimesh

    if texture is not None:
        from PIL import Image

        visual = trimesh.visual.TextureVisuals(
            uv=np.column_stack([uv[:, 0], 1.0 - uv[:, 1]]), image=Image.fromarray(texture)
        )
        tm = trimesh.Trimesh(vertices, triangles, visual=visual, process=False)
        mesh = pyrender.Mesh.from_trimesh(tm, smooth=True)
        light = 2.0
    else:
        tm = trimesh.Trimesh(vertices, triangles, process=False)
        material = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=(*colour, 1.0), metallicFactor=0.0, roughnessFactor=0.8
        )
        mesh = pyrender.Mesh.from_trimesh(tm, material=material, smooth=True)
        light = 3.0
    scene = pyrender.Scene(ambient_light=[0.35, 0.35, 0.35], bg_color=[0, 0, 0, 0])
    scene.add(mesh)
    return scene, light


def _render(scene, light: float, xmag: float, ymag: float, z_front: float, depth: float, size: tuple[int, int]):
    import pyrender

    renderer = _renderer(*size)
    pose = np.eye(4)
    pose[2, 3] = z_front + 10.0
    scene.add(pyrender.OrthographicCamera(xmag=xmag, ymag=ymag, znear=1.0, zfar=depth + 50.0), pose=pose)
    scene.add(pyrender.DirectionalLight(intensity=light), pose=pose)
    colour, _ = renderer.render(scene, flags=pyrender.RenderFlags.RGBA)
    return colour


def overlay(
    image_rgb: np.ndarray,
    photo_vertices: np.ndarray,
    triangles: np.ndarray,
    max_side: int = 640,
    alpha: float = 0.6,
) -> np.ndarray:
    """The mesh, shaded, blended over the photo. `photo_vertices` are (N, 3) photo x, y and depth (towards the
    viewer, pixels), e.g. `Camera.project`. Returns an RGB image at most `max_side` pixels wide or high."""
    h, w = image_rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    out_w, out_h = max(1, round(w * s)), max(1, round(h * s))
    v = np.asarray(photo_vertices, dtype=np.float64) * s
    world = np.column_stack([v[:, 0] - out_w / 2, out_h / 2 - v[:, 1], v[:, 2]])
    scene, light = _scene(world, triangles)
    z_front, depth = float(world[:, 2].max()), float(np.ptp(world[:, 2]))
    rgba = _render(scene, light, out_w / 2, out_h / 2, z_front, depth, (out_w, out_h))
    photo = cv2.resize(image_rgb, (out_w, out_h), interpolation=cv2.INTER_AREA) if s < 1 else image_rgb.copy()
    a = (rgba[:, :, 3:4].astype(np.float32) / 255.0) * alpha
    return (photo.astype(np.float32) * (1 - a) + rgba[:, :, :3].astype(np.float32) * a).astype(np.uint8)


def turntable(
    vertices: np.ndarray,
    triangles: np.ndarray,
    uv: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    frames: int = 24,
    size: int = 256,
    swing_deg: float = 70.0,
) -> list[np.ndarray]:
    """Frames of the mesh (model frame) turning from -swing_deg to +swing_deg and back, RGB on white."""
    v = np.asarray(vertices, dtype=np.float64)
    v = v - (v.max(axis=0) + v.min(axis=0)) / 2
    half = float(np.abs(v[:, :2]).max()) * 1.1
    out = []
    # a smooth swing -swing_deg..swing_deg..-swing_deg; the half-step phase keeps consecutive frames distinct
    angles = swing_deg * np.sin(2 * np.pi * (np.arange(frames) + 0.5) / frames)
    for deg in angles:
        a = np.radians(deg)
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        world = v @ rot.T
        scene, light = _scene(world, triangles, uv, texture)
        rgba = _render(
            scene, light, half, half, float(world[:, 2].max()), float(np.ptp(world[:, 2])), (size, size)
        )
        a_ = rgba[:, :, 3:4].astype(np.float32) / 255.0
        out.append((rgba[:, :, :3].astype(np.float32) * a_ + 255.0 * (1 - a_)).astype(np.uint8))
    return out


def gif_bytes(frames: list[np.ndarray], ms_per_frame: int = 80) -> bytes:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return buf.getvalue()


def landmark_plot(
    image_rgb: np.ndarray, landmarks: np.ndarray, pose=None, gaze=None, size: int = 320
) -> np.ndarray:
    """A square crop around the face with the 68 landmarks, their outline, the head axes and the gaze arrow."""
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre, side = (lo + hi) / 2, float((hi - lo).max()) * 1.5
    s = size / max(side, 1.0)
    m = np.array([[s, 0, size / 2 - centre[0] * s], [0, s, size / 2 - centre[1] * s]])
    img = cv2.warpAffine(image_rgb, m, (size, size), flags=cv2.INTER_AREA, borderValue=(0, 0, 0))
    p = pts * s + m[:, 2]
    for a, b, closed in _GROUPS:
        poly = np.round(p[a:b] * 16).astype(np.int32)
        cv2.polylines(img, [poly], closed, (255, 255, 255), 1, cv2.LINE_AA, shift=4)
    for q in np.round(p * 16).astype(np.int32):
        cv2.circle(img, tuple(int(v) for v in q), 2 * 16, (40, 220, 40), -1, cv2.LINE_AA, shift=4)
    nose = p[30]
    if pose is not None:
        _axes(img, nose, pose, size * 0.18)
    if gaze is not None and gaze[0] is not None:
        eyes = (p[36:42].mean(axis=0) + p[42:48].mean(axis=0)) / 2
        _arrow(img, eyes, gaze[0], gaze[1], size * 0.3, (255, 60, 60))
    return img


def _direction(yaw: float, pitch: float) -> np.ndarray:
    y, p = np.radians(yaw), np.radians(pitch)
    return np.array([-np.sin(y) * np.cos(p), np.sin(p)])  # image x right, y down


def _arrow(img, start, yaw, pitch, length, colour) -> None:
    end = np.asarray(start) + _direction(yaw, pitch) * length
    cv2.arrowedLine(
        img, tuple(int(v) for v in start), tuple(int(v) for v in end), colour, 2, cv2.LINE_AA, tipLength=0.2
    )


def _axes(img, origin, pose, length) -> None:
    """Head axes from yaw, pitch, roll (degrees): x red, y green, z (forward) blue."""
    yaw, pitch, roll = np.radians(pose[:3])
    ry = np.array([[np.cos(-yaw), 0, np.sin(-yaw)], [0, 1, 0], [-np.sin(-yaw), 0, np.cos(-yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    for k, colour in enumerate(((230, 40, 40), (40, 200, 40), (60, 90, 255))):
        d = r[:, k]
        end = np.asarray(origin) + np.array([d[0], -d[1]]) * length
        cv2.line(img, tuple(int(v) for v in origin), tuple(int(v) for v in end), colour, 2, cv2.LINE_AA)


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    from facedata.recon3d.meshio import encode_png

    atomic.write_bytes(path, encode_png(rgb, level=6))
