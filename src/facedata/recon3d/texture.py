"""Texture maps from photos: each texel of the model's uv layout takes its colour from where the fitted mesh
puts it in the photo, if the photo sees it, weighted by how squarely the photo sees it.

eos's `extract_texture` does the single-view part in C++ but is slow on a CPU (it rasterises at the photo's
full resolution), so this module does it the cheap way: the uv layout is rasterised once per
resolution (each texel's triangle and barycentric coordinates), then per view only the vertices are projected,
visibility comes from a coarse z-buffer of the projected vertices plus the surface normal, and the photo is
sampled with one `cv2.remap`. Several views merge per texel with weights cos(view angle)^`sharpness`, so each
texel comes mostly from the view that faces it; weights fade out near the edge of what a view sees, where a
slightly misplaced silhouette would otherwise paint hair or background onto the face. The SFM's uv layout is
mirror-symmetric (texel (u, v) <-> (1 - u, v)), so a texel no view sees takes the colour of its mirror texel
when that one was seen (faces are nearly symmetric); what is left is filled from neighbours (push-pull), so
the mesh has no black holes. `weight` says which texels were really observed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from facedata.recon3d.dense import SFM, Camera

MIN_COS = 0.2  # texels seen more obliquely than ~78 degrees are not taken from that view
FEATHER = 0.03  # weights fade in over this fraction of the texture size from the edge of what a view sees


@dataclass(frozen=True)
class UVRaster:
    resolution: int
    rows: np.ndarray  # (m,) texel rows (v down) covered by a triangle
    cols: np.ndarray  # (m,)
    tri: np.ndarray  # (m,) triangle index
    bary: np.ndarray  # (m, 3) barycentric coordinates
    tv: np.ndarray  # (m, 3) the triangle's vertex ids


@functools.lru_cache(maxsize=4)
def uv_raster(sfm: SFM, resolution: int) -> UVRaster:
    """Which triangle covers each texel and where in it (computed once per resolution, ~0.1 s)."""
    uvpx = sfm.uv * resolution  # texture pixels, v down (eos's convention)
    ids = np.full((resolution, resolution), -1, np.int32)
    shift = 4  # sub-pixel vertex positions for fillConvexPoly
    pts = np.round((uvpx - 0.5) * (1 << shift)).astype(np.int32)
    for t, (a, b, c) in enumerate(sfm.triangles):
        cv2.fillConvexPoly(ids, pts[[a, b, c]], int(t), lineType=cv2.LINE_8, shift=shift)
    rows, cols = np.nonzero(ids >= 0)
    tri = ids[rows, cols]
    p = np.stack([cols + 0.5, rows + 0.5], axis=1)
    a, b, c = (uvpx[sfm.triangles[tri, k]] for k in range(3))
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    bary = np.clip(np.stack([1 - l1 - l2, l1, l2], axis=1), 0, 1)
    bary /= bary.sum(axis=1, keepdims=True)
    return UVRaster(resolution, rows, cols, tri, bary.astype(np.float32), sfm.triangles[tri])


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (outward for the SFM's winding)."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    fn = np.cross(b - a, c - a)
    n = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(n, triangles[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def visible_points(xyz: np.ndarray, cell: float) -> np.ndarray:
    """(m,) bool: which of m dense surface points (photo x, y, depth towards the viewer) are in front, by a
    z-buffer with `cell`-pixel cells (a point is hidden when another lies over it by more than 1.5 cells)."""
    ij = np.floor((xyz[:, :2] - xyz[:, :2].min(axis=0)) / cell).astype(np.int64)
    w = int(ij[:, 0].max()) + 1
    flat = ij[:, 1] * w + ij[:, 0]
    zbuf = np.full(int(flat.max()) + 1, -np.inf, np.float32)
    np.maximum.at(zbuf, flat, xyz[:, 2].astype(np.float32))
    return xyz[:, 2] >= zbuf[flat] - 1.5 * cell


def sample_view(
    sfm: SFM, raster: UVRaster, vertices: np.ndarray, camera: Camera, image_rgb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One photo's colours (R, R, 3) uint8 and cos(view angle) weights (R, R) float32 (0 = not seen)."""
    res = raster.resolution
    proj = camera.project(vertices).astype(np.float32)
    normals_z = (vertex_normals(vertices, sfm.triangles) @ camera.rotation[2]).astype(np.float32)
    tv = raster.tv
    b = raster.bary
    pos = b[:, 0:1] * proj[tv[:, 0]] + b[:, 1:2] * proj[tv[:, 1]] + b[:, 2:3] * proj[tv[:, 2]]
    cos = b[:, 0] * normals_z[tv[:, 0]] + b[:, 1] * normals_z[tv[:, 1]] + b[:, 2] * normals_z[tv[:, 2]]
    # each texel is a surface sample: a z-buffer over them at ~1/100 of the face decides what is hidden
    face = float(np.sqrt(np.prod(proj[:, :2].max(axis=0) - proj[:, :2].min(axis=0))))
    seen = visible_points(pos, max(face / 100.0, 0.5))
    h, w = image_rgb.shape[:2]
    inside = (pos[:, 0] >= 0) & (pos[:, 1] >= 0) & (pos[:, 0] <= w - 1) & (pos[:, 1] <= h - 1)
    weight = np.where(seen & inside & (cos > MIN_COS), cos, 0.0).astype(np.float32)
    mapx = np.full((res, res), -1, np.float32)
    mapy = np.full((res, res), -1, np.float32)
    mapx[raster.rows, raster.cols] = pos[:, 0]
    mapy[raster.rows, raster.cols] = pos[:, 1]
    colours = cv2.remap(image_rgb, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    wmap = np.zeros((res, res), np.float32)
    wmap[raster.rows, raster.cols] = weight
    # the z-buffer decides per texel; a median over the seen/unseen mask removes its speckle at silhouettes
    mask = cv2.medianBlur((wmap > 0).astype(np.uint8) * 255, 5)
    fade = np.clip(cv2.distanceTransform(mask, cv2.DIST_L2, 3) / max(FEATHER * res, 1.0), 0, 1)
    return colours, (wmap * fade * (mask > 0)).astype(np.float32)


def merge(colours: list[np.ndarray], weights: list[np.ndarray], sharpness: float = 4.0):
    """Per-texel weighted mean of the views' colours, weights cos^sharpness; returns (rgb uint8 filled,
    weight float32 = the best view's cos, 0 where no view saw the texel)."""
    if len(colours) == 1:
        ww = np.power(weights[0], sharpness)
        acc, wsum, best = colours[0].astype(np.float32) * ww[..., None], ww, weights[0]
    else:
        acc = np.zeros(colours[0].shape, np.float32)
        wsum = np.zeros(weights[0].shape, np.float32)
        best = np.zeros(weights[0].shape, np.float32)
        for c, w in zip(colours, weights, strict=True):
            ww = np.power(w, sharpness)
            acc += c.astype(np.float32) * ww[..., None]
            wsum += ww
            best = np.maximum(best, w)
    seen = wsum > 1e-12
    out = np.zeros_like(acc)
    out[seen] = acc[seen] / wsum[seen][:, None]
    # a texel no view saw takes its mirror texel's colour (the uv layout is symmetric) when that was seen
    mirror = ~seen & seen[:, ::-1]
    out[mirror] = out[:, ::-1][mirror]
    return fill_holes(out, seen | mirror), best


def fill_holes(rgb: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill unknown texels from known neighbours by push-pull (average down a pyramid, fill back up)."""
    img = np.where(known[..., None], rgb, 0).astype(np.float32)
    mask = known.astype(np.float32)
    pyramid = [(img, mask)]
    while min(img.shape[:2]) > 4 and mask.min() == 0:
        img = cv2.resize(img * mask[..., None], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        m = cv2.resize(mask, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        img = np.where(m[..., None] > 0, img / np.maximum(m[..., None], 1e-6), 0)
        mask = (m > 0).astype(np.float32)
        pyramid.append((img, mask))
    filled = pyramid[-1][0]
    for img, mask in reversed(pyramid[:-1]):
        up = cv2.resize(filled, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        filled = np.where(mask[..., None] > 0, img, up)
    return np.clip(filled + 0.5, 0, 255).astype(np.uint8)
