"""`onnx:<path>`: any face recognizer exported to ONNX, run with onnxruntime.

The model file says its input shape; what it cannot say is how its training crops were made. That is the
input spec, params.yaml `embed.onnx` (every key optional):

    template: arcface112   # alignment template the model was trained on (see facedata.faces.align)
    size: 112              # crop side; default: the model's input height, else the template's own size
    mean: 127.5            # subtracted per channel (a number or three numbers, in `channels` order)
    std: 127.5             # then divided by
    channels: rgb          # rgb | bgr
    layout: auto           # nchw | nhwc | auto (from the input shape)
    output: 0              # output name or index holding the embedding

The defaults are InsightFace's ArcFace conventions, the most common exported recognizers. The version stored
with each vector is the file's sha256, so a different file with the same name is a different model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.embed import check_crops, l2_normalize
from facedata.faces.align import TEMPLATES

SPEC_KEYS = {"template", "size", "mean", "std", "channels", "layout", "output"}


class OnnxSpecError(ValueError):
    """The `embed.onnx` input spec does not fit the model."""


class OnnxEmbedder:
    template = "arcface112"

    def __init__(self, path: str | Path, spec: dict, flip: bool = False, threads: int = 0) -> None:
        import onnxruntime as ort

        from facedata.ids import sha256_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"ONNX model {path} not found (embed.model: onnx:<path>, relative to the project)"
            )
        unknown = set(spec) - SPEC_KEYS
        if unknown:
            raise OnnxSpecError(f"embed.onnx has unknown key(s) {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
        self.name = f"onnx:{path.name}"
        self.version = "sha256:" + sha256_file(path)[:16]
        self.flip = flip
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4:
            raise OnnxSpecError(f"{path.name}: input {inp.name} has shape {shape}; expected a 4-d image batch")
        layout = spec.get("layout", "auto")
        if layout == "auto":
            layout = "nchw" if shape[1] == 3 else "nhwc" if shape[3] == 3 else None
            if layout is None:
                raise OnnxSpecError(
                    f"{path.name}: cannot tell the layout of input shape {shape}; set embed.onnx.layout"
                )
        if layout not in ("nchw", "nhwc"):
            raise OnnxSpecError(f"embed.onnx.layout must be nchw, nhwc or auto, got {layout!r}")
        self.layout = layout
        h = shape[2] if layout == "nchw" else shape[1]
        self.template = spec.get("template", "arcface112")
        if self.template not in TEMPLATES:
            raise OnnxSpecError(f"embed.onnx.template {self.template!r} is not one of {', '.join(TEMPLATES)}")
        self.crop_size = int(spec.get("size") or (h if isinstance(h, int) else TEMPLATES[self.template][1]))
        if isinstance(h, int) and h != self.crop_size:
            raise OnnxSpecError(f"embed.onnx.size {self.crop_size} does not match the model's input size {h}")
        self.channels = spec.get("channels", "rgb")
        if self.channels not in ("rgb", "bgr"):
            raise OnnxSpecError(f"embed.onnx.channels must be rgb or bgr, got {self.channels!r}")
        self.mean = np.broadcast_to(np.asarray(spec.get("mean", 127.5), np.float32), (3,)).copy()
        self.std = np.broadcast_to(np.asarray(spec.get("std", 127.5), np.float32), (3,)).copy()
        outputs = self.session.get_outputs()
        out = spec.get("output", 0)
        names = [o.name for o in outputs]
        if isinstance(out, int):
            if not 0 <= out < len(outputs):
                raise OnnxSpecError(f"embed.onnx.output {out} out of range; outputs: {names}")
            out = names[out]
        if out not in names:
            raise OnnxSpecError(f"embed.onnx.output {out!r} is not an output; outputs: {names}")
        self.output = out
        # Models exported with a fixed batch of 1 (common) are run one crop at a time.
        self.one_at_a_time = shape[0] == 1
        dim = outputs[names.index(out)].shape[-1]
        probe = np.zeros((1, self.crop_size, self.crop_size, 3), np.uint8)
        self.dim = int(dim) if isinstance(dim, int) else int(self._run(probe).shape[1])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32)
        if self.channels == "bgr":
            x = x[..., ::-1]
        x = (x - self.mean) / self.std
        if self.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x)
        if self.one_at_a_time:
            outs = [self.session.run([self.output], {self.input_name: x[i : i + 1]})[0] for i in range(len(x))]
            return np.concatenate(outs).reshape(len(x), -1)
        return self.session.run([self.output], {self.input_name: x})[0].reshape(len(x), -1)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        check_crops(crops, self.crop_size, self.name)
        batch = np.stack(crops)
        v = l2_normalize(self._run(batch))
        if self.flip:
            v = l2_normalize(v + l2_normalize(self._run(batch[:, :, ::-1])))
        return v
