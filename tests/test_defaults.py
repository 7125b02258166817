"""One place for every default: the params spec (`facedata.params.SPEC`). Library dataclasses and function
defaults that mirror a params key derive from it (`default("section.key")`, never a literal of their own),
and every params key reaches the settings object built from a params section."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import textwrap
from types import SimpleNamespace

import pytest

import facedata
from facedata.params import SPEC, default, defaults

#: Which params sections each library package (or top-level module) reads: a keyword default there that is
#: named like one of their keys mirrors it.
SECTIONS = {
    "cluster": ["cluster"],
    "embed": ["embed"],
    "faces": ["detect", "embed"],
    "imageio": ["ingest"],
    "collect": ["ingest", "crawl"],
    "recon3d": ["recon3d", "train3d"],
    "train": ["train", "identify"],
    "quality": ["validate"],
    "export": ["export"],
    "video": ["video"],
    "scale": ["execution"],
}

#: (module, object, parameter) whose name matches a params key but that is a different setting, and why.
DIFFERENT = {
    ("facedata.cluster.algorithms", "Options", "cannot_link"): "the pairs themselves, not the on/off switch",
    ("facedata.cluster.graph", "average_linkage", "relax"): "the merge kernel: 0 is exact average linkage",
    ("facedata.pipeline.collect", "ingest_url_list", "allow_hosts"): "hosts named on the command line",
    ("facedata.collect.crawler", "CrawlSettings", "allow_hosts"): "built from crawl.allow_hosts by from_params",
    ("facedata.collect.crawler", "CrawlSettings", "user_agent"): "built from crawl.contact by from_params",
    ("facedata.collect.crawler", "Crawler", "max_bytes"): "per-call override; None: the settings' cap",
    ("facedata.collect.fetch", "Fetcher", "max_bytes"): "per-call override; None: the config's cap",
    ("facedata.embed", "TorchEmbedder", "flip"): "the bare network; make_embedder applies embed.flip",
    ("facedata.embed.dlib_resnet", "DlibResNetEmbedder", "flip"): "the bare network (see make_embedder)",
    ("facedata.embed.facenet", "FacenetEmbedder", "flip"): "the bare network (see make_embedder)",
    ("facedata.embed.onnx", "OnnxEmbedder", "flip"): "the bare network (see make_embedder)",
    ("facedata.embed", "TorchEmbedder", "device"): "the bare network (see make_embedder)",
    ("facedata.embed.dlib_resnet", "DlibResNetEmbedder", "device"): "the bare network (see make_embedder)",
    ("facedata.embed.facenet", "FacenetEmbedder", "device"): "the bare network (see make_embedder)",
    ("facedata.embed", "model_version_label", "flip"): "required argument",
    (
        "facedata.embed",
        "make_embedder",
        "flip",
    ): "the bare network; FaceAnalyzer and the embed stage pass embed.flip",
    ("facedata.faces.align", "align", "detector"): "which landmark convention; None: the template's own",
    ("facedata.faces.align", "template", "detector"): "which landmark convention; None: the template's own",
    ("facedata.faces.pool", "worker_count", "device"): "an already resolved device",
    ("facedata.faces.quality", "primary_index", "min_score"): "callers pass detect.min_score; 0: any face",
    ("facedata.recon3d.crop", "affine", "flip"): "mirror this one crop, not the flip-averaging switch",
    ("facedata.recon3d.crop", "warp", "flip"): "mirror these crops, not the flip-averaging switch",
    ("facedata.recon3d.mobilenet", "load_checkpoint", "device"): "an already resolved device",
    ("facedata.recon3d.reconstruct", "FaceResult", "gaze"): "the estimated gaze, not the switch",
    ("facedata.recon3d.reconstruct", "Reconstructor", "weights"): "None: recon3d.weights of its params",
    ("facedata.recon3d.regress", "RegressorConfig", "weights"): "None: the 3DDFA_V2 weights (from_params maps '')",
    ("facedata.recon3d.render", "landmark_plot", "gaze"): "the estimated gaze to draw",
    ("facedata.recon3d.train", "landmark_nme", "device"): "an already resolved device",
    ("facedata.recon3d.train", "Train3DConfig", "device"): "train3d.device (recon3d.device is another key)",
    ("facedata.recon3d.train", "Train3DConfig", "batch_size"): "train3d.batch_size (not recon3d.batch_size)",
    ("facedata.recon3d.regress", "RegressorConfig", "device"): "recon3d.device (train3d.device is another key)",
    ("facedata.recon3d.regress", "RegressorConfig", "batch_size"): "recon3d.batch_size (not train3d's)",
    ("facedata.video.synthetic", "write_video", "fps"): "the written video's frame rate, not the analysis rate",
    ("facedata.train.export", "dlib_backbone", "device"): "an already resolved device",
    ("facedata.train.export", "load", "device"): "an already resolved device",
    ("facedata.train.recognizer", "fit_vectors", "device"): "an already resolved device",
}


def _literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is not None
    if isinstance(node, ast.UnaryOp):
        return _literal(node.operand)
    if isinstance(node, ast.Tuple | ast.List):
        return bool(node.elts) and all(_literal(e) for e in node.elts)
    return False


def _default_nodes(obj) -> dict[str, ast.AST]:
    """{parameter or field: the expression of its default} as written in the source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    node = tree.body[0]
    out: dict[str, ast.AST] = {}
    if isinstance(node, ast.ClassDef):
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                out[item.target.id] = item.value
            if isinstance(item, ast.FunctionDef):
                out.update({f"{item.name}:{k}": v for k, v in _function_defaults(item).items()})
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        out.update(_function_defaults(node))
    return out


def _function_defaults(fn: ast.FunctionDef) -> dict[str, ast.AST]:
    args = fn.args.posonlyargs + fn.args.args
    out = {a.arg: d for a, d in zip(args[len(args) - len(fn.args.defaults) :], fn.args.defaults, strict=True)}
    out.update({a.arg: d for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True) if d is not None})
    return out


def mirrors() -> list[tuple[str, str, str, object, ast.AST, list[str]]]:
    """(module, object, parameter, its default value, its source expression, params keys of the same name
    in the module's sections) for every keyword default in the library named like a params key."""
    leaves: dict[str, list[str]] = {}
    for key in SPEC:
        leaves.setdefault(key.split(".", 1)[1], []).append(key)
    found = []
    for info in pkgutil.walk_packages(facedata.__path__, "facedata."):
        sections = SECTIONS.get(info.name.split(".")[1])
        if sections is None:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != info.name or not (
                inspect.isclass(obj) or inspect.isfunction(obj)
            ):
                continue
            values: dict[str, object] = {}
            if dataclasses.is_dataclass(obj):
                for f in dataclasses.fields(obj):
                    if f.default is not dataclasses.MISSING:
                        values[f.name] = f.default
                    elif f.default_factory is not dataclasses.MISSING:
                        values[f.name] = f.default_factory()
            if inspect.isfunction(obj):
                values = {
                    p.name: p.default
                    for p in inspect.signature(obj).parameters.values()
                    if p.default is not p.empty
                }
            if inspect.isclass(obj):
                for mname, meth in vars(obj).items():
                    if inspect.isfunction(meth) and not (mname == "__init__" and dataclasses.is_dataclass(obj)):
                        prefix = "" if mname == "__init__" else f"{mname}:"
                        for p in inspect.signature(meth).parameters.values():
                            if p.default is not p.empty:
                                values[prefix + p.name] = p.default
            nodes = _default_nodes(obj)
            for param, value in values.items():
                leaf = param.split(":")[-1]
                keys = [k for k in leaves.get(leaf, []) if k.split(".")[0] in sections]
                if keys:
                    node = nodes.get(param) or nodes.get(f"__init__:{param}")
                    found.append((info.name, name, leaf, value, node, keys))
    return found


def test_library_defaults_that_mirror_a_params_key_come_from_the_spec():
    found = mirrors()
    assert len(found) > 100  # the walk sees the library (Options, Settings, TrainConfig, detectors, ...)
    bad = []
    for module, obj, param, value, node, keys in found:
        if (module, obj, param) in DIFFERENT:
            continue
        if not any(value == SPEC[k].default for k in keys):
            bad.append(
                f"{module}.{obj}({param}={value!r}) but the params spec says {keys[0]}={SPEC[keys[0]].default!r}"
            )
        elif node is not None and _literal(node):
            bad.append(f"{module}.{obj}({param}={ast.unparse(node)}) repeats a literal: use default({keys[0]!r})")
    assert not bad, "\n".join(bad)


def test_the_named_duplicates_follow_the_spec():
    """The defaults issue 15 found written twice (two of them disagreeing with params.yaml)."""
    from facedata.collect.ingest import ingest_items
    from facedata.faces.detect import RetinaFaceDetector
    from facedata.imageio import read_image_file
    from facedata.recon3d import dense
    from facedata.recon3d.train import Train3DConfig

    sig = inspect.signature
    assert sig(dense.fit).parameters["lambda_shape"].default == default("recon3d.lambda_shape")  # was 4.0 vs 0.5
    assert sig(dense.fit).parameters["iterations"].default == default("recon3d.fit_iterations")
    assert sig(ingest_items).parameters["checkpoint_seconds"].default == default("crawl.checkpoint_seconds")  # 30
    assert sig(read_image_file).parameters["min_side"].default == default("ingest.min_side")
    assert sig(RetinaFaceDetector).parameters["max_side"].default == default("detect.max_side")
    assert Train3DConfig() == Train3DConfig.from_params(defaults()["train3d"])


def _other(value):
    """A valid-looking value different from `value`, to see it arrive."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 + 0.0625
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, {"root": "x"}]
    return value


def _builders():
    """section -> functions building a settings object from that section, and {field: params key} where the
    field's name differs from its key."""
    from facedata.cluster.faceset import options
    from facedata.collect.crawler import CrawlSettings
    from facedata.collect.video import VideoSettings
    from facedata.recon3d.reconstruct import Settings
    from facedata.recon3d.regress import RegressorConfig
    from facedata.recon3d.train import Train3DConfig as Train3D
    from facedata.train.config import TrainConfig
    from facedata.video.index import track_settings

    ingest_video = {f"video_{k}" if k != "max_frames" else "max_frames_per_video": k for k in (
        "fps", "max_frames", "scene_threshold", "scene_fps", "faces_only", "face_min_score", "min_face_px",
        "dup_bits",
    )}  # fmt: skip
    return {
        "cluster": [(options, {})],
        "recon3d": [(Settings.from_params, {}), (lambda p: RegressorConfig.from_params(p), {})],
        "train3d": [(Train3D.from_params, {})],
        "train": [(TrainConfig.from_params, {})],
        "crawl": [(lambda c: CrawlSettings.from_params({**defaults(), "crawl": c}, require_contact=False), {})],
        "ingest": [(VideoSettings.from_params, ingest_video)],
        "video": [(track_settings, {"track_min_iou": "min_iou"})],
    }


#: For every section, the modules handed that section's dict: a key no settings object carries must be read
#: there (`section["key"]` or `.get("key")`).
READERS = {
    "sources": ["facedata.collect.config", "facedata.pipeline.ingest"],
    "ingest": ["facedata.pipeline.ingest", "facedata.collect.ingest"],
    "crawl": ["facedata.collect.config", "facedata.collect.webpage", "facedata.pipeline.ingest"],
    "detect": [
        "facedata.faces.detect", "facedata.faces.analyze", "facedata.faces.quality", "facedata.pipeline.detect",
    ],
    "embed": ["facedata.embed", "facedata.faces.analyze", "facedata.faces.views", "facedata.pipeline.embed"],
    "cluster": ["facedata.cluster.faceset", "facedata.pipeline.cluster"],
    "validate": ["facedata.quality.gates", "facedata.pipeline.validate"],
    "export": ["facedata.pipeline.export"],
    "train": [],
    "train3d": [],
    "recon3d": ["facedata.pipeline.reconstruct3d"],
    "video": ["facedata.video.index", "facedata.cli.identify"],
    "execution": ["facedata.scale.connect", "facedata.scale.shards", "facedata.pipeline.items"],
    "identify": ["facedata.cli.identify"],
    "models": ["facedata.project"],
}  # fmt: skip


#: Settings fields named like their key that hold something derived from it (the key is checked by its reader).
BUILT_DIFFERENTLY = {
    "cluster": {"cannot_link": "Options.cannot_link holds the pairs; the switch is read by cluster.faceset"},
    "crawl": {
        "allow_hosts": "parsed host patterns (collect.config reads the list)",
        "user_agent": "built from crawl.contact (collect.config)",
    },
}


def _reads(module: str) -> set[str]:
    """String keys `module` reads from a mapping: `x["key"]`, `x.get("key", ...)`."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str):
            out.add(n.slice.value)
        elif (
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr == "get"
            and n.args
            and isinstance(n.args[0], ast.Constant)
        ):
            out.add(n.args[0].value)
    return out


def _reached(section: str) -> set[str]:
    """Keys of `section` whose value, changed, arrives in the settings object built from the section."""
    base = defaults()[section]
    reached = set()
    for build, renamed in _builders().get(section, []):
        built = build(base)
        fields = {f.name for f in dataclasses.fields(built)}
        for key in base:
            field = renamed.get(key, key)
            if field not in fields or key in BUILT_DIFFERENTLY.get(section, {}):
                continue
            changed = {**base, key: _other(base[key])}
            assert getattr(build(changed), field) == changed[key], f"{section}.{key} does not reach its settings"
            reached.add(key)
    return reached


def test_readers_name_every_section():
    assert set(READERS) == {k.split(".")[0] for k in SPEC}


@pytest.mark.parametrize("section", sorted(READERS))
def test_every_params_key_reaches_the_code_that_uses_it(section):
    """Each key either reaches a settings object built from its section (checked by changing it), or is read
    by name in a module its section is handed to; a key neither carries nor reads is a dead parameter."""
    keys = set(defaults()[section])
    reached = _reached(section)
    read = set().union(*(_reads(m) for m in READERS[section])) if READERS[section] else set()
    missing = keys - reached - read
    assert not missing, f"{section} keys that reach no settings object and no reader: {sorted(missing)}"


def test_face3d_turntable_frames_zero_means_no_turntable(monkeypatch, tmp_path):
    """`recon3d.turntable_frames: 0` was read as 24 by `facedata face3d` (`or 24`)."""
    import numpy as np

    from facedata.cli import face3d
    from facedata.recon3d import render

    calls = []
    monkeypatch.setattr(render, "turntable", lambda *a, frames, **k: calls.append(frames) or [])
    monkeypatch.setattr(render, "gif_bytes", lambda frames: b"GIF")

    class Rec:
        sfm = SimpleNamespace(triangles=None, uv=None)

        def __init__(self, n):
            self.params = {**defaults()["recon3d"], "turntable_frames": n}

        def fuse(self, views):
            dense = SimpleNamespace(vertices=lambda view: np.zeros((3, 3)))
            return SimpleNamespace(
                dense=dense,
                texture=None,
                view_errors=[1.0, 1.0],
                heldout_errors=None,
                single_heldout_errors=None,
                better_than_single=None,
            )

        def write_fused(self, fused, out, extra, extra_files):
            self.written = extra_files
            return {}

    views = [("a", None), ("b", None)]
    for n, expected in ((0, []), (3, [3])):
        calls.clear()
        rec = Rec(n)
        face3d._fuse(rec, views, tmp_path, True, 2)
        assert calls == expected
        assert ("turntable.gif" in rec.written) == bool(n)
