"""The trained model on disk: `model.pt` (state_dict + meta, what `facedata identify` loads) and `model.onnx`
(the same network for onnxruntime or any ONNX runtime; outputs `embedding` and `scores`), checked against
the torch outputs when written.

What the ONNX model takes (its `meta["input"]`):
- head / centroid: `face_embedding`, (N, d) float32, the embedding model's unit vectors (`meta["embed"]` says which
  model and settings made them);
- finetune: `crop`, (N, 3, 150, 150) float32, aligned `dlib150` crops normalised as `meta["onnx_input"]` says;
  that spec is exactly params.yaml `embed.onnx`, so `embed.model: onnx:<model.onnx>` embeds with the fine-tuned
  network (output 0 is the embedding).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from facedata import atomic
from facedata.train.heads import Recognizer

MODEL = "model.pt"
ONNX = "model.onnx"


class ModelFileError(RuntimeError):
    """A model file is missing, unreadable or not a facedata recognizer."""


def save(path: Path, net: Recognizer, meta: dict) -> None:
    state = {"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "meta": meta}
    atomic.write_torch(path, state)


def dlib_backbone(device: str = "cpu"):
    """The dlib ResNet port with its released weights (the fine-tuning start, and the shape a fine-tuned
    state_dict loads into)."""
    from facedata import models
    from facedata.embed.dlib_resnet import build_module, read_weights

    return build_module(read_weights(models.locate_file("dlib-resnet"))).to(device)


def load(path: str | Path, device: str = "cpu") -> tuple[Recognizer, dict]:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no model at {path}: train one with `dvc repro train` (or `facedata build`)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        meta, weights = state["meta"], state["state_dict"]
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise ModelFileError(f"{path} is not a facedata recognizer ({type(exc).__name__}: {exc})") from exc
    backbone = dlib_backbone(device) if meta["mode"] == "finetune" else None
    net = Recognizer(meta["dim"], len(meta["classes"]), meta["projection"], meta["hidden_dim"], backbone)
    net.load_state_dict(weights)
    return net.to(device).eval(), meta


def export_onnx(net: Recognizer, path: Path, example: torch.Tensor, input_name: str) -> float:
    """Write the network as ONNX (dynamic batch) and return the largest absolute difference between
    onnxruntime's and torch's outputs on `example`."""
    import onnxruntime as ort

    net = net.cpu().eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the dlib ResNet's residual padding branches on shapes, which are fixed for its 150 px input
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            net,
            (example,),
            buf,
            input_names=[input_name],
            output_names=["embedding", "scores"],
            dynamic_axes={input_name: {0: "n"}, "embedding": {0: "n"}, "scores": {0: "n"}},
            dynamo=False,
        )
        want = [t.numpy() for t in net(example)]
    data = buf.getvalue()
    atomic.write_bytes(path, data)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    got = session.run(["embedding", "scores"], {input_name: example.numpy()})
    return float(max(np.abs(a - b).max() for a, b in zip(got, want, strict=True)))
