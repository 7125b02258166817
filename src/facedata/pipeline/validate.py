"""Stage `validate`: Great Expectations suites on every manifest; a failed gate fails the stage (and the flow)
with a report naming each failing check and example rows."""

from __future__ import annotations

from facedata import atomic
from facedata.pipeline.runner import StageContext, StageFailed
from facedata.quality import gates


def run(ctx: StageContext) -> dict:
    frames = gates.load_frames(ctx.root)
    labelled = gates.labelled_metrics_frame(ctx.root)
    if labelled is not None:
        frames["labelled_metrics"] = labelled
    checks = gates.suites(ctx.params, frames, labelled is not None)
    report = gates.run_suites(frames, checks, ctx.p["max_failing_examples"])
    report["failures"] = gates.failures(report)
    atomic.write_json(ctx.project.reports_dir / "validate.json", report)
    atomic.write_text(ctx.project.reports_dir / "validate.html", gates.render_html(report))
    n_checks = sum(len(m["checks"]) for m in report["manifests"].values())
    n_failed = len(report["failures"])
    metrics = {
        "n_checks": n_checks,
        "n_failed": n_failed,
        "passed": report["success"],
        "rows": {name: m["n_rows"] for name, m in report["manifests"].items()},
    }
    if not report["success"]:
        raise StageFailed(
            f"{n_failed} of {n_checks} quality checks failed (report: data/reports/validate.html):\n  "
            + "\n  ".join(report["failures"]),
            metrics,
        )
    return metrics
