"""The 3DDFA_V2 parameterisation: 62 numbers -> 68 3D landmarks and a head pose.

Layout (from ../shared/models/3ddfa_v2/MANIFEST.md): `param = net_out * std + mean`; `param[:12]` is a 3x4
scaled-orthographic camera [sR | t], `param[12:52]` the 40 BFM shape coefficients, `param[52:62]` the 10
expression coefficients. The 68 landmarks are `sR @ (u + W_shp a_shp + W_exp a_exp) + t` with the 3DDFA v1
sparse bases, in the 120x120 crop's frame (y up); `crop.to_image` maps them back into the photo.

Everything here is vectorised over a batch (numpy or torch), so it costs microseconds per face.
"""

from __future__ import annotations

import functools
import math
import pickle
from dataclasses import dataclass

import numpy as np

from facedata import models

MODEL_NAME = "3ddfa-v2-mb05"
NUM_PARAMS = 62

#: Which landmark each of the 68 iBUG points becomes in a mirrored image (for flip test-time augmentation).
FLIP_68 = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


@dataclass(frozen=True)
class Bases:
    mean: np.ndarray  # (62,) parameter mean
    std: np.ndarray  # (62,) parameter std
    u: np.ndarray  # (3, 68) mean landmark shape
    w_shp: np.ndarray  # (3, 68, 40)
    w_exp: np.ndarray  # (3, 68, 10)

    @property
    def w(self) -> np.ndarray:
        """(204, 50) shape and expression bases side by side, rows ordered x0 y0 z0 x1 ... (3DDFA's order)."""
        return np.concatenate(
            [self.w_shp.transpose(1, 0, 2).reshape(204, 40), self.w_exp.transpose(1, 0, 2).reshape(204, 10)], 1
        )


@functools.cache
def load_bases() -> Bases:
    files = models.locate(MODEL_NAME)
    with open(files["configs/param_mean_std_62d_120x120.pkl"], "rb") as fh:
        stats = pickle.load(fh)  # noqa: S301 - a sha256-verified file from the model registry
    u = np.loadtxt(files["v1_sparse68_bases/u_base.txt"], dtype=np.float64).reshape(-1)
    w_shp = np.loadtxt(files["v1_sparse68_bases/w_shp_base.txt"], dtype=np.float64)
    w_exp = np.loadtxt(files["v1_sparse68_bases/w_exp_base.txt"], dtype=np.float64)
    # (204,) interleaved x,y,z per point -> (3, 68) like reshape(3, -1, order='F')
    return Bases(
        mean=np.asarray(stats["mean"], np.float64).reshape(62),
        std=np.asarray(stats["std"], np.float64).reshape(62),
        u=u.reshape(68, 3).T.copy(),
        w_shp=w_shp.reshape(68, 3, 40).transpose(1, 0, 2).copy(),
        w_exp=w_exp.reshape(68, 3, 10).transpose(1, 0, 2).copy(),
    )


def denormalize(out: np.ndarray, bases: Bases | None = None) -> np.ndarray:
    """Network output (n, 62) -> 3DMM parameters (n, 62)."""
    b = bases or load_bases()
    return out * b.std + b.mean


def landmarks_crop(params: np.ndarray, bases: Bases | None = None) -> np.ndarray:
    """(n, 62) parameters -> (n, 3, 68) landmarks in the 120x120 crop frame (3DDFA's: origin 1, y up)."""
    b = bases or load_bases()
    params = np.atleast_2d(params)
    cam = params[:, :12].reshape(-1, 3, 4)
    shape = b.u[None] + np.einsum("cpk,nk->ncp", b.w_shp, params[:, 12:52])
    shape = shape + np.einsum("cpk,nk->ncp", b.w_exp, params[:, 52:62])
    return cam[:, :, :3] @ shape + cam[:, :, 3:]


def rotation(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 62) -> (scale (n,), rotation (n, 3, 3)) of the camera, re-orthonormalised (3DDFA's P2sRt)."""
    cam = np.atleast_2d(params)[:, :12].reshape(-1, 3, 4)
    r1, r2 = cam[:, 0, :3], cam[:, 1, :3]
    n1 = np.linalg.norm(r1, axis=1, keepdims=True)
    n2 = np.linalg.norm(r2, axis=1, keepdims=True)
    r1, r2 = r1 / n1, r2 / n2
    r3 = np.cross(r1, r2)
    return ((n1 + n2) / 2).reshape(-1), np.stack([r1, r2, r3], axis=1)


def angles(rot: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotations in 3DDFA's frame -> (n, 3) yaw, pitch, roll in degrees (3DDFA_V2's `matrix2angle`).

    Yaw > 0: the face turns towards the image's left (the subject's right); pitch > 0: the face looks down;
    roll > 0: the head tilts counter-clockwise as seen in the image. (AFLW2000-3D's `Pose_Para` has the same
    yaw sign and the opposite pitch and roll signs.)"""
    rot = np.asarray(rot).reshape(-1, 3, 3)
    out = np.zeros((len(rot), 3))
    for i, r in enumerate(rot):
        if r[2, 0] > 0.998:
            yaw, pitch, roll = math.pi / 2, math.atan2(-r[0, 1], -r[0, 2]), 0.0
        elif r[2, 0] < -0.998:
            yaw, pitch, roll = -math.pi / 2, math.atan2(r[0, 1], r[0, 2]), 0.0
        else:
            yaw = math.asin(r[2, 0])
            c = math.cos(yaw)
            pitch = math.atan2(r[2, 1] / c, r[2, 2] / c)
            roll = math.atan2(r[1, 0] / c, r[0, 0] / c)
        out[i] = (yaw, pitch, roll)
    return np.degrees(out)


def pose_degrees(params: np.ndarray) -> np.ndarray:
    """(n, 62) -> (n, 3) yaw, pitch, roll in degrees of the camera in the crop's own frame."""
    return angles(rotation(params)[1])
