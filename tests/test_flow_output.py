"""How the build flow reads a stage's output (no server needed): levels, DVC chatter, skips, real exit codes."""

from __future__ import annotations

import logging

from facedata.flows.build import classify_lines, stage_outcome
from facedata.gitinfo import describe_changes, params_changes

from .projects import commit, run

GATE_OUTPUT = """Running stage 'validate':
> sh stages/run.sh validate
/venv/lib/python3.11/site-packages/google/protobuf/symbol_database.py:55: UserWarning: GetPrototype() is deprecated
  warnings.warn('SymbolDatabase.GetPrototype() is deprecated. Please '
W0000 00:00:1796271948.153447    8505 inference_feedback_manager.cc:114] Feedback manager requires a model
warning: 3 images have no EXIF orientation
facedata validate: FAILED: 2 of 54 quality checks failed (report: data/reports/validate.html):
  identities: expect_column_values_to_be_between(n_members) failed — too few faces
  faces: expect_column_values_to_not_be_null(quality) failed — 1 row
ERROR: failed to reproduce 'validate': failed to run: sh stages/run.sh validate, exited with 1
Updating lock file 'dvc.lock'
To track the changes with git, run:
\tgit add dvc.lock
To enable auto staging, run:
\tdvc config core.autostage true
Use `dvc push` to send your updates to remote storage.""".splitlines()


def test_lines_are_logged_at_their_level_and_dvc_chatter_is_debug_only():
    levels = dict((line, level) for level, line in classify_lines("validate", GATE_OUTPUT))
    debug = [line for line, level in levels.items() if level == logging.DEBUG]
    assert all(
        any(line.startswith(p) for line in debug)
        for p in ("Running stage", "To track the changes", "\tgit add", "To enable auto staging", "Use `dvc push`")
    )
    assert levels["  warnings.warn('SymbolDatabase.GetPrototype() is deprecated. Please '"] == logging.DEBUG
    assert levels[GATE_OUTPUT[4]] == logging.DEBUG  # abseil's log line
    assert levels["warning: 3 images have no EXIF orientation"] == logging.WARNING
    assert levels[GATE_OUTPUT[6]] == logging.ERROR and levels[GATE_OUTPUT[7]] == logging.ERROR
    assert levels[GATE_OUTPUT[8]] == logging.ERROR


def test_a_failure_reports_the_stage_exit_code_and_its_own_message():
    out = stage_outcome("validate", GATE_OUTPUT, 255)
    assert out["status"] == "failed" and out["gate"] and out["code"] == 1
    assert out["message"] == (
        "stage validate failed (exit 1): 2 of 54 quality checks failed (report: data/reports/validate.html): "
        "identities: expect_column_values_to_be_between(n_members) failed — too few faces (+1 more)"
    )
    crash = [
        "Running stage 'ingest':",
        "> sh stages/run.sh ingest",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "    boom()",
        "ZeroDivisionError: division by zero",
        "ERROR: failed to reproduce 'ingest': failed to run: sh stages/run.sh ingest, exited with 1",
    ]
    out = stage_outcome("ingest", crash, 255)
    assert out["message"] == "stage ingest failed (exit 1): ZeroDivisionError: division by zero"
    assert not out["gate"] and not out["setup"]
    dvc_only = ["ERROR: failed to reproduce 'ingest': the lock is held"]
    assert stage_outcome("ingest", dvc_only, 255)["message"].startswith(
        "stage ingest failed (dvc exit 255): ERROR"
    )


def test_skipped_restored_and_ran_are_told_apart():
    assert stage_outcome("detect", ["Stage 'detect' didn't change, skipping"], 0)["status"] == "skipped"
    cached = ["Stage 'detect' is cached - skipping run, checking out outputs"]
    assert stage_outcome("detect", cached, 0)["status"] == "restored"
    ran = ["Running stage 'detect':", "> sh stages/run.sh detect", "facedata detect: done in 1.0s"]
    assert stage_outcome("detect", ran, 0)["status"] == "ran"


def test_params_changed_since_the_last_commit(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    (tmp_path / "params.yaml").write_text("detect:\n  min_score: 0.5\nexport:\n  seed: 0\n")
    commit(tmp_path, "params")
    assert params_changes(tmp_path) == {}
    (tmp_path / "params.yaml").write_text("detect:\n  min_score: 0.6\nexport:\n  seed: 0\n  extra: x\n")
    changes = params_changes(tmp_path)
    assert changes == {"detect.min_score": (0.5, 0.6), "export.extra": (None, "x")}
    assert describe_changes(changes) == "detect.min_score=0.6, export.extra=x"
    assert params_changes(tmp_path / "nowhere") == {}
