"""Writing a textured face mesh: OBJ + MTL + PNG, GLB (trimesh), and the 68 landmarks as an `.xyz` point file.

A face's files are written into a fresh temporary folder which then replaces the face's folder in one rename,
so a killed run leaves either the old folder or the complete new one, never a mix or a torn file. (Files are
not fsynced one by one, which is slow; the stage syncs once before it commits the manifest, and a
manifest row whose files are missing is redone.) The OBJ is written here directly (trimesh's OBJ exporter
is a large share of the per-face time) with the mesh-independent part cached; the GLB goes
through trimesh, with the texture embedded as JPEG (PIL's PNG encoder inside trimesh is slow). Vertices
are in the model's frame (SFM units, ~mm; x to the image's right in a frontal view, y up, z towards the
viewer), so meshes of different photos line up.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from facedata.params import default

FILES = {
    "obj": "mesh.obj",
    "mtl": "mesh.mtl",
    "texture": "texture.png",
    "glb": "mesh.glb",
    "landmarks": "landmarks68.xyz",
}


def _rows(prefix: str, arr: np.ndarray, fmt: str) -> str:
    if len(arr) == 0:
        return ""
    line = prefix + (" " + fmt) * arr.shape[1] + "\n"
    return (line * len(arr)) % tuple(arr.ravel().tolist())


@functools.lru_cache(maxsize=2)
def _obj_tail(triangles: bytes, uv: bytes, n_tri: int) -> str:
    """The texture coordinates and faces: the same for every mesh of one model topology."""
    tri = np.frombuffer(triangles, dtype=np.int64).reshape(n_tri, 3)
    uvs = np.frombuffer(uv, dtype=np.float64).reshape(-1, 2)
    vt = np.column_stack([uvs[:, 0], 1.0 - uvs[:, 1]])
    f = np.repeat(tri + 1, 2, axis=1)
    return _rows("vt", vt, "%.6f") + ("f %d/%d %d/%d %d/%d\n" * len(f)) % tuple(f.ravel().tolist())


def obj_text(vertices: np.ndarray, triangles: np.ndarray, uv: np.ndarray, mtl_name: str) -> str:
    """Wavefront OBJ with one texture coordinate per vertex (OBJ's v axis points up)."""
    tri = np.ascontiguousarray(triangles, dtype=np.int64)
    uvs = np.ascontiguousarray(uv, dtype=np.float64)
    return (
        "# facedata 3D face (Surrey Face Model topology)\n"
        f"mtllib {mtl_name}\nusemtl face\n"
        + _rows("v", np.asarray(vertices, dtype=np.float64), "%.4f")
        + _obj_tail(tri.tobytes(), uvs.tobytes(), len(tri))
    )


def mtl_text(texture_name: str) -> str:
    return (
        "newmtl face\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\nd 1.0\nillum 1\n"
        f"map_Kd {texture_name}\n"
    )


def encode_png(rgb: np.ndarray, level: int = 1) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def glb_bytes(vertices: np.ndarray, triangles: np.ndarray, uv: np.ndarray, texture_rgb: np.ndarray) -> bytes:
    import trimesh
    from PIL import Image

    ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(texture_rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92])
    image = Image.open(io.BytesIO(jpg.tobytes()))  # format JPEG: trimesh embeds it as JPEG, not a slow PNG
    visual = trimesh.visual.TextureVisuals(uv=np.column_stack([uv[:, 0], 1.0 - uv[:, 1]]), image=image)
    mesh = trimesh.Trimesh(np.asarray(vertices), np.asarray(triangles), visual=visual, process=False)
    return mesh.export(file_type="glb")


def mesh_files(
    vertices: np.ndarray,
    triangles: np.ndarray,
    uv: np.ndarray,
    texture_rgb: np.ndarray,
    landmarks: np.ndarray,
    glb: bool = default("recon3d.glb"),
) -> dict[str, bytes]:
    """The mesh files' contents, {file name: bytes}. `landmarks` is (68, 3) in the mesh frame (rows with NaN,
    the landmarks the model does not define, are written as `nan nan nan`)."""
    files = {
        "texture": encode_png(texture_rgb),
        "mtl": mtl_text(FILES["texture"]).encode(),
        "obj": obj_text(vertices, triangles, uv, FILES["mtl"]).encode(),
        "landmarks": xyz_text(landmarks).encode(),
    }
    if glb:
        files["glb"] = glb_bytes(vertices, triangles, uv, texture_rgb)
    return {FILES[k]: v for k, v in files.items()}


def write_mesh(out_dir: str | Path, *args, **kwargs) -> dict[str, Path]:
    """`mesh_files(...)` written as folder `out_dir`; returns {kind: path} (kinds as in `FILES`)."""
    return write_folder(out_dir, mesh_files(*args, **kwargs), keys=dict(FILES))


def write_folder(
    out_dir: str | Path, files: dict[str, bytes], keys: dict[str, str] | None = None
) -> dict[str, Path]:
    """Replace folder `out_dir` by one holding exactly `files` ({name: bytes}), in one rename. Returns
    {key: path} for the names in `keys` ({key: name}) that were written, and {name: path} for the rest."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            os.chmod(tmp / name, 0o644)
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    by_name = {v: k for k, v in (keys or {}).items()}
    return {by_name.get(name, name): out / name for name in files}


def xyz_text(points: np.ndarray) -> str:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return ("%.4f %.4f %.4f\n" * len(pts)) % tuple(pts.ravel().tolist())


def read_xyz(path: str | Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.float64).reshape(-1, 3)
