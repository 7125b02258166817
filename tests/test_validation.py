"""Quality-gate reports name the check that actually failed, whatever order Great Expectations answers in."""

from __future__ import annotations

import pandas as pd
import pytest

from facedata.quality import gates as validation


def _frames_and_checks():
    df = pd.DataFrame(
        {
            "image_id": ["a" * 64, "not-a-sha", "b" * 64],
            "store_path": ["x.jpg", "y.jpg", "x.jpg"],  # a duplicate key
            "width": [100, 100, 10],
        }
    )
    checks = [
        validation.Check("ExpectColumnValuesToBeUnique", {"column": "image_id"}, "image_id is the key"),
        validation.Check(
            "ExpectColumnValuesToMatchRegex", {"column": "image_id", "regex": r"^[0-9a-f]{64}$"}, "a sha256"
        ),
        validation.Check("ExpectColumnValuesToBeUnique", {"column": "store_path"}, "store_path is the key"),
        validation.Check(
            "ExpectColumnValuesToBeBetween", {"column": "width", "min_value": 32, "max_value": None}, "width >= 32"
        ),
    ]
    return {"images": df}, {"images": checks}


def _by_why(report):
    return {e["why"]: e for e in report["manifests"]["images"]["checks"]}


@pytest.mark.parametrize("order", ["as_returned", "reversed", "rotated"])
def test_each_result_is_matched_to_its_expectation_by_id(order, monkeypatch):
    import great_expectations as gx

    real_run = gx.ValidationDefinition.run

    def reordered(self, *args, **kwargs):
        result = real_run(self, *args, **kwargs)
        if order == "reversed":
            result.results = list(reversed(result.results))
        elif order == "rotated":
            result.results = result.results[1:] + result.results[:1]
        return result

    monkeypatch.setattr(gx.ValidationDefinition, "run", reordered)
    frames, checks = _frames_and_checks()
    report = validation.run_suites(frames, checks, max_examples=5)
    got = _by_why(report)
    assert [e["why"] for e in report["manifests"]["images"]["checks"]] == [c.why for c in checks["images"]]
    assert got["image_id is the key"]["success"] is True
    assert got["image_id is the key"]["expectation"] == "expect_column_values_to_be_unique"
    regex = got["a sha256"]
    assert regex["expectation"] == "expect_column_values_to_match_regex" and regex["column"] == "image_id"
    assert regex["success"] is False and regex["unexpected_count"] == 1
    assert regex["examples"] == [{"image_id": "not-a-sha"}]
    dup = got["store_path is the key"]
    assert dup["column"] == "store_path" and dup["success"] is False and dup["unexpected_count"] == 2
    assert all(e["store_path"] == "x.jpg" for e in dup["examples"])
    width = got["width >= 32"]
    assert width["success"] is False and width["examples"] == [{"image_id": "b" * 64, "width": 10}]
    lines = validation.failures(report)
    assert any("(image_id) failed — a sha256" in line for line in lines)
    assert any("(store_path) failed — store_path is the key" in line for line in lines)


def test_a_check_without_a_result_fails_and_says_so(monkeypatch):
    import great_expectations as gx

    real_run = gx.ValidationDefinition.run

    def dropped(self, *args, **kwargs):
        result = real_run(self, *args, **kwargs)
        result.results = result.results[1:]
        return result

    monkeypatch.setattr(gx.ValidationDefinition, "run", dropped)
    frames, checks = _frames_and_checks()
    report = validation.run_suites(frames, checks, max_examples=5)
    missing = [e for e in report["manifests"]["images"]["checks"] if e.get("error", "").startswith("Great Exp")]
    assert len(missing) == 1 and missing[0]["success"] is False and report["success"] is False
