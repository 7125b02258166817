"""params.yaml: one spec of every key; unknown keys and bad values refused with the key named."""

from __future__ import annotations

import copy

import pytest
import yaml

from facedata import params
from facedata.params import ParamsError, params_hash, with_defaults

from .conftest import REPO


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _leaf_keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        key = prefix + k
        if isinstance(v, dict) and key not in params.SPEC:
            out |= _leaf_keys(v, key + ".")
        else:
            out.add(key)
    return out


def test_repo_params_yaml_lists_every_key_and_validates():
    raw = repo_params()
    assert _leaf_keys(raw) == set(params.SPEC)
    with_defaults(raw)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(params, "_WARNED", set())  # the once-per-process memory, per test


def test_missing_keys_take_defaults_with_one_warning():
    with pytest.warns(UserWarning, match="using the defaults") as rec:
        p = with_defaults({"detect": {"min_score": 0.8}})
    assert len(rec) == 1
    message = str(rec[0].message)
    assert "cluster.*" in message and "cluster.threshold" not in message  # a whole missing section, once
    assert "detect.batch_size" in message and "detect.min_score" not in message
    assert p["detect"]["min_score"] == 0.8
    assert p["detect"]["batch_size"] == params.SPEC["detect.batch_size"].default


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"detect": {"min_scor": 0.5}}, "unknown parameter.*detect.min_scor"),
        ({"detect": {"min_score": 1.5}}, r"detect.min_score must be 0..1"),
        ({"detect": {"batch_size": "8"}}, "detect.batch_size must be int"),
        ({"detect": {"batch_size": True}}, "detect.batch_size must be int"),
        ({"cluster": {"method": "kmeans"}}, "cluster.method must be one of"),
        ({"export": {"splits": {"train": 0.5, "test": 0.2}}}, "export.splits"),
        ({"sources": {"folders": [{"names": ["a"]}]}}, r"sources.folders\[0\] needs a `root`"),
        ({"sources": {"folders": [{"root": "x", "nmes": ["a"]}]}}, "unknown key"),
        ({"sources": {"videos": [{"fps": 1}]}}, r"sources.videos\[0\] needs a `path`"),
    ],
)
def test_bad_values_name_the_key(patch, message):
    raw = copy.deepcopy(repo_params())
    for section, values in patch.items():
        raw[section].update(values)
    with pytest.raises(ParamsError, match=message):
        with_defaults(raw)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        params.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("detect: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load(tmp_path / "params.yaml")


def test_params_hash_ignores_speed_only_keys():
    p = with_defaults(repo_params())
    base = params_hash(p, ["detect"])
    faster = copy.deepcopy(p)
    faster["detect"]["batch_size"] = 64
    faster["detect"]["device"] = "cpu"
    assert params_hash(faster, ["detect"]) == base
    stricter = copy.deepcopy(p)
    stricter["detect"]["min_score"] = 0.95
    assert params_hash(stricter, ["detect"]) != base
    assert params_hash(p, ["cluster", "embed.model"]) != params_hash(p, ["cluster"])


def test_the_defaults_warning_is_said_once_per_process_and_not_by_stages(tmp_path):
    """Every stage loaded params.yaml and warned about the same missing keys: once per process now, and the
    stages leave it to the check stage, which runs before them and reports it."""
    import warnings

    import yaml

    from facedata.pipeline.runner import make_context

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            with_defaults({"detect": {"min_score": 0.8}})
    assert len([w for w in rec if issubclass(w.category, params.DefaultsUsed)]) == 1
    raw = params.defaults()
    del raw["cluster"]["k"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("error", params.DefaultsUsed)
        ctx = make_context("cluster", tmp_path)
    assert ctx.params["cluster"]["k"] == params.SPEC["cluster.k"].default


def test_execution_dask_address_forms_are_checked():
    from facedata.params import check

    for ok in ("", "local:2", "tcp://10.0.0.5:8786", "tls://scheduler:8786"):
        assert not check({"execution": {"dask_address": ok}})[1], ok
    for bad in ("local:0", "local:x", "10.0.0.5:8786", "scheduler"):
        errors = check({"execution": {"dask_address": bad}})[1]
        assert any("execution.dask_address" in e for e in errors), bad
