"""3DMM regression for every face of every image, batched: 62 parameters, 68 3D landmarks, head pose.

The recipe, per face (all faces of all images go through each step as one batch):

1. crop from the detector box (`recon3d.box_shift` / `box_scale`) and regress;
2. `refine_passes` times: crop again from the landmarks just found, turned so the face is upright (the
   network saw upright faces in training; a tilted head otherwise costs accuracy), and regress;
3. in the last pass, also regress on the mirrored crop and average the two (`flip`), which cancels part of
   the network's left/right bias.

The number of refinement passes, the upright turn and the flip were chosen on the 8 AFLW2000-3D images in
../shared, the only ones with ground truth here: their NME on those images is a development figure, not a
test result (BENCHMARKS.md, "3D faces", has the numbers and what the choice on those images is worth).

The network is ours (`mobilenet.py`, plain torch). On a CPU it runs through onnxruntime, exported from the
torch module at start-up, because torch's depth-wise convolutions are several times slower on CPUs; on a GPU
it runs in torch. Both give the same numbers to float precision (a test checks).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata import models
from facedata.params import default
from facedata.recon3d import bfm, crop
from facedata.recon3d.mobilenet import MobileNet3DMM, load_checkpoint

_MIRROR = np.diag([-1.0, 1.0, 1.0])


@dataclass
class Fit:
    """One face's regression result. Coordinates are photo pixels (x right, y down, z towards the camera)."""

    params: np.ndarray  # (62,) 3DMM parameters in the final crop's frame
    crop: np.ndarray  # (4,) cx, cy, side, theta of the final crop
    landmarks: np.ndarray  # (68, 3)
    pose: np.ndarray  # (3,) yaw, pitch, roll in degrees, in the photo's frame
    rotation: np.ndarray  # (3, 3) head rotation in the photo's frame (3DDFA axes: x right, y up, z out)
    box: np.ndarray = field(default_factory=lambda: np.zeros(4))  # (4,) the detector box it started from

    @property
    def yaw(self) -> float:
        return float(self.pose[0])


@dataclass(frozen=True)
class RegressorConfig:
    weights: str | None = None  # a checkpoint from `facedata train 3d`; None = the 3DDFA_V2 mb05 weights
    device: str = default("recon3d.device")
    backend: str = default("recon3d.backend")
    batch_size: int = default("recon3d.batch_size")
    refine_passes: int = default("recon3d.refine_passes")
    flip: bool = default("recon3d.flip")
    deroll: bool = default("recon3d.deroll")
    box_shift: float = default("recon3d.box_shift")
    box_scale: float = default("recon3d.box_scale")

    @classmethod
    def from_params(cls, p: dict, weights: str | None = None) -> RegressorConfig:
        return cls(
            weights=weights or (p.get("weights") or None),
            device=p["device"],
            backend=p["backend"],
            batch_size=p["batch_size"],
            refine_passes=p["refine_passes"],
            flip=p["flip"],
            deroll=p["deroll"],
            box_shift=p["box_shift"],
            box_scale=p["box_scale"],
        )


def default_weights() -> Path:
    return models.locate(bfm.MODEL_NAME)["weights/mb05_120x120.pth"]


class Regressor:
    """Batched 3DMM regression. `fit(images_bgr, boxes)` -> per image, a list of `Fit` (one per box)."""

    def __init__(self, config: RegressorConfig | None = None):
        from facedata.device import resolve_device

        self.config = cfg = config or RegressorConfig()
        self.bases = bfm.load_bases()
        weights = Path(cfg.weights) if cfg.weights else default_weights()
        if not weights.is_file():
            raise FileNotFoundError(f"3D regressor weights {weights} not found (recon3d.weights in params.yaml)")
        self.weights = weights
        self.version = (
            models.get_spec(bfm.MODEL_NAME).version if cfg.weights is None else f"finetuned:{weights.name}"
        )
        self.device = resolve_device(cfg.device)
        self.net = load_checkpoint(weights, self.device)
        backend = cfg.backend
        if backend == "auto":
            backend = "onnxruntime" if self.device == "cpu" else "torch"
        self.backend = backend
        self._session = _onnx_session(self.net) if backend == "onnxruntime" else None

    # -- network -----------------------------------------------------------------------------------------
    def run_network(self, x: np.ndarray) -> np.ndarray:
        """(n, 3, 120, 120) float32 inputs -> (n, 62) 3DMM parameters (de-normalised)."""
        outs = []
        for start in range(0, len(x), self.config.batch_size):
            chunk = x[start : start + self.config.batch_size]
            if self._session is not None:
                out = self._session.run(None, {"input": chunk})[0]
            else:
                import torch

                with torch.inference_mode():
                    out = self.net(torch.from_numpy(chunk).to(self.device)).float().cpu().numpy()
            outs.append(out)
        raw = np.concatenate(outs) if outs else np.zeros((0, bfm.NUM_PARAMS), np.float32)
        return bfm.denormalize(raw.astype(np.float64), self.bases)

    def _regress(self, images: list[np.ndarray], owner: np.ndarray, crops: np.ndarray, with_flip: bool = False):
        """Landmarks (n, 68, 3) in the photo, parameters (n, 62) and rotations (n, 3, 3) for crops of images.
        With `with_flip`, the mirrored crops (the same pixels reversed, no second warp) go through the network in
        the same batch, and their landmarks and rotations come back too, mapped to the unmirrored face."""
        n = len(crops)
        inputs = np.zeros((n * (2 if with_flip else 1), 3, crop.SIZE, crop.SIZE), np.float32)
        for i in np.unique(owner):
            sel = np.flatnonzero(owner == i)
            inputs[sel] = crop.to_input(crop.warp(images[i], crops[sel]))
        if with_flip:
            inputs[n:] = inputs[:n, :, :, ::-1]
        params = self.run_network(inputs)
        pts = bfm.landmarks_crop(params, self.bases)
        _, rot = bfm.rotation(params)
        if with_flip:
            pts[n:] = crop.mirror_frame(pts[n:], bfm.FLIP_68)
            rot[n:] = _MIRROR @ rot[n:] @ _MIRROR
        both = np.concatenate([crops, crops]) if with_flip else crops
        # the crop turned by theta in the photo (y down) = a turn by -theta in 3DDFA's y-up frame
        rot = _rot_z(-both[:, 3]) @ rot
        return crop.to_image(pts, both), params, rot

    # -- public --------------------------------------------------------------------------------------------
    def fit(self, images_bgr: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[Fit]]:
        """For each image (BGR uint8) and its (k, 4) detector boxes, one `Fit` per box, in box order."""
        cfg = self.config
        owner = np.concatenate([np.full(len(np.reshape(b, (-1, 4))), i) for i, b in enumerate(boxes)] or [[]])
        owner = owner.astype(int)
        all_boxes = np.concatenate([np.reshape(b, (-1, 4)) for b in boxes] or [np.zeros((0, 4))]).astype(float)
        if len(all_boxes) == 0:
            return [[] for _ in images_bgr]
        crops = crop.from_boxes(all_boxes, cfg.box_shift, cfg.box_scale)
        n = len(all_boxes)
        passes = cfg.refine_passes
        pts, params, rot = self._regress(images_bgr, owner, crops, with_flip=cfg.flip and passes == 0)
        for k in range(passes):
            theta = np.radians(-bfm.angles(rot[:n])[:, 2]) if cfg.deroll else np.zeros(n)
            crops = crop.from_landmarks(pts[:n], theta)
            pts, params, rot = self._regress(images_bgr, owner, crops, with_flip=cfg.flip and k == passes - 1)
        if cfg.flip:
            pts = (pts[:n] + pts[n:]) / 2
            rot = _orthonormal(rot[:n] + rot[n:])
            params = params[:n]
        pose = bfm.angles(rot)
        out: list[list[Fit]] = [[] for _ in images_bgr]
        for j, i in enumerate(owner):
            out[i].append(Fit(params[j], crops[j], pts[j], pose[j], rot[j], all_boxes[j]))
        return out


def _rot_z(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    r = np.zeros((len(angle), 3, 3))
    r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1], r[:, 2, 2] = c, -s, s, c, 1.0
    return r


def _orthonormal(m: np.ndarray) -> np.ndarray:
    """The nearest rotation to each (n, 3, 3) matrix (SVD projection)."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u[:, :, -1] *= d[:, None]
    return u @ vt


def _onnx_session(net: MobileNet3DMM):
    """An onnxruntime session running `net` (exported in memory; ~1 s once per process)."""
    import warnings

    import onnxruntime as ort
    import torch

    buf = io.BytesIO()
    cpu_net = net.to("cpu").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            cpu_net,
            torch.zeros(1, 3, crop.SIZE, crop.SIZE),
            buf,
            input_names=["input"],
            output_names=["params"],
            dynamic_axes={"input": {0: "n"}, "params": {0: "n"}},
            dynamo=False,
        )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
