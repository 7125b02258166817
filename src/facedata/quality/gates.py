"""Quality gates on the manifests, with Great Expectations (GX Core 1.x).

Each manifest gets a suite: schema, nulls, unique keys, value ranges, lineage complete, parents present, and
the gates whose thresholds live in params.yaml (`validate:`): detection rate, near-duplicate share, dominant-
cluster confidence, faces per identity, and purity / BCubed F when labels exist. Facts GX cannot see directly
(does the stored file exist, is the parent row there, is the vector unit length) are computed into boolean
columns first, then expected to be true, so every failure is reported by GX with the offending rows.

The report (JSON for machines, self-contained HTML for people) names each failing expectation, how many rows
fail, and example rows with their ids, so a user can go straight to the bad data.
"""

from __future__ import annotations

import html
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facedata import manifest
from facedata.lineage import LINEAGE_TYPE

LINEAGE_REQUIRED = [f.name for f in LINEAGE_TYPE if not f.nullable]


@dataclass
class Check:
    """One expectation: the GX class name, its arguments, and a sentence saying what it guards."""

    expectation: str
    kwargs: dict
    why: str


def _ids_of(df: pd.DataFrame, col: str) -> set:
    return set(df[col].dropna()) if col in df else set()


def lineage_complete(df: pd.DataFrame, col: str = "lineage") -> pd.Series:
    def ok(lin: Any) -> bool:
        return isinstance(lin, dict) and all(lin.get(k) not in (None, "") for k in LINEAGE_REQUIRED)

    return df[col].map(ok) if len(df) else pd.Series([], dtype=bool)


def load_frames(root: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The manifests to check, with computed columns added (named `chk_*`)."""
    root = Path(root)
    names = ["images", "crawl_log", "detections", "faces", "embeddings", "clusters", "identities"]
    frames = {n: manifest.read(n, root).to_pandas() for n in names}
    images, faces, emb, clusters = frames["images"], frames["faces"], frames["embeddings"], frames["clusters"]
    image_ids, face_ids = _ids_of(images, "image_id"), _ids_of(faces, "face_id")

    for df in frames.values():
        df["chk_lineage_complete"] = lineage_complete(df)

    images["chk_store_file_ok"] = [
        (root / p).is_file() and (root / p).stat().st_size == n
        for p, n in zip(images["store_path"], images["n_bytes"], strict=True)
    ]
    images["chk_not_near_duplicate"] = images["dup_of"].isna()
    log = frames["crawl_log"]
    log["chk_failure_has_reason"] = (log["status"] != "failed") | log["reason"].notna()
    dets = frames["detections"]
    dets["chk_has_face"] = dets["n_faces"] > 0
    dets["chk_image_known"] = dets["image_id"].isin(image_ids)
    faces["chk_image_known"] = faces["image_id"].isin(image_ids)
    faces["chk_box_valid"] = (faces["x2"] > faces["x1"]) & (faces["y2"] > faces["y1"])
    faces["chk_filtered_has_reason"] = (faces["status"] != "filtered") | faces["reason"].notna()
    faces["chk_crop_exists"] = [bool(p) and (root / p).is_file() for p in faces["crop_path"]]
    ok_faces = set(faces.loc[faces["status"] == "ok", "face_id"])
    emb["chk_key"] = emb["face_id"] + "/" + emb["model"]
    emb["chk_unit_norm"] = [abs(float(np.linalg.norm(v)) - 1.0) < 1e-3 for v in emb["vector"]]
    emb["chk_dim_matches"] = [len(v) == d for v, d in zip(emb["vector"], emb["dim"], strict=True)]
    emb["chk_face_usable"] = emb["face_id"].isin(ok_faces)
    clusters["chk_face_known"] = clusters["face_id"].isin(face_ids)
    idents = frames["identities"]
    idents["chk_accepted_in_review"] = idents["reason"].fillna("").str.startswith("accepted in review")
    # Faces that export will put in the dataset must trace back to a stored image through every manifest.
    store_ok = dict(zip(images["image_id"], images["chk_store_file_ok"], strict=True))
    embedded = set(emb["face_id"])
    clusters["chk_traceable"] = [
        ident is None or (fid in ok_faces and fid in embedded and bool(store_ok.get(img, False)))
        for fid, img, ident in zip(clusters["face_id"], clusters["image_id"], clusters["identity"], strict=True)
    ]
    return frames


def labelled_metrics_frame(root: str | os.PathLike) -> pd.DataFrame | None:
    """One row of clustering metrics against labels, when any source is labelled (the cluster stage's
    `labelled` metrics, from the same function)."""
    from facedata.cluster.metrics import LOG_COLUMNS, clustering_metrics, labelled_assignment, labelled_items

    root = Path(root)
    images = manifest.read("images", root, columns=["image_id", "label"]).to_pylist()
    if not any(r["label"] for r in images):
        return None
    faces = manifest.read("faces", root, columns=["face_id", "image_id", "status", "is_primary"]).to_pylist()
    primary = {f["image_id"]: f["face_id"] for f in faces if f["status"] == "ok" and f["is_primary"]}
    face_cluster = {r["face_id"]: r["cluster_id"] for r in manifest.read("clusters", root).to_pylist()}
    log = manifest.read("crawl_log", root, columns=LOG_COLUMNS).to_pylist()
    items = labelled_items(log, {r["image_id"]: r["label"] for r in images})
    if not items:
        return None
    truth, pred = labelled_assignment(items, primary, face_cluster)
    return pd.DataFrame([clustering_metrics(truth, pred)])


def suites(params: dict, frames: dict[str, pd.DataFrame], has_labels: bool) -> dict[str, list[Check]]:
    v = params["validate"]

    def unique(col: str) -> Check:
        return Check("ExpectColumnValuesToBeUnique", {"column": col}, f"{col} is the key: no duplicate rows")

    def not_null(col: str) -> Check:
        return Check("ExpectColumnValuesToNotBeNull", {"column": col}, f"{col} is required")

    def true(col: str, why: str, mostly: float = 1.0) -> Check:
        kw: dict[str, Any] = {"column": col, "value_set": [True]}
        if mostly < 1.0:
            kw["mostly"] = mostly
        return Check("ExpectColumnValuesToBeInSet", kw, why)

    def between(col: str, lo=None, hi=None, why: str = "") -> Check:
        return Check(
            "ExpectColumnValuesToBeBetween",
            {"column": col, "min_value": lo, "max_value": hi},
            why or f"{col} within [{lo}, {hi}]",
        )

    def columns(name: str) -> Check:
        cols = [f.name for f in manifest.schema(name)]
        return Check(
            "ExpectTableColumnsToMatchSet",
            {"column_set": cols, "exact_match": False},
            f"the {name} manifest has every schema column",
        )

    lineage = true("chk_lineage_complete", "every row says which stage, run, code and params made it")
    out: dict[str, list[Check]] = {
        "images": [
            columns("images"),
            not_null("image_id"),
            unique("image_id"),
            unique("store_path"),
            Check(
                "ExpectColumnValuesToMatchRegex",
                {"column": "image_id", "regex": r"^[0-9a-f]{64}$"},
                "image_id is the sha256 of the bytes",
            ),
            between("width", params["ingest"]["min_side"], None),
            between("height", params["ingest"]["min_side"], None),
            not_null("source_uri"),
            not_null("fetched_at"),
            true("chk_store_file_ok", "every image's bytes are in the store at the recorded size"),
            true(
                "chk_not_near_duplicate",
                f"at most {v['max_duplicate_fraction']:.0%} near-duplicate images",
                1.0 - v["max_duplicate_fraction"],
            ),
            lineage,
        ],
        "crawl_log": [
            columns("crawl_log"),
            unique("log_id"),
            Check(
                "ExpectColumnValuesToBeInSet",
                {"column": "status", "value_set": ["stored", "duplicate", "failed", "skipped"]},
                "known statuses",
            ),
            true("chk_failure_has_reason", "every failed item says why"),
            lineage,
        ],
        "detections": [
            columns("detections"),
            unique("image_id"),
            true("chk_image_known", "detections refer to known images"),
            true(
                "chk_has_face",
                f"a face is found in at least {v['min_detection_rate']:.0%} of images",
                v["min_detection_rate"],
            ),
            lineage,
        ],
        "faces": [
            columns("faces"),
            not_null("face_id"),
            unique("face_id"),
            true("chk_image_known", "faces refer to images"),
            between("score", 0.0, 1.0),
            true("chk_box_valid", "boxes have positive width and height"),
            between("blur", 0.0, None),
            between("quality", 0.0, 1.0),
            Check(
                "ExpectColumnValuesToBeInSet", {"column": "status", "value_set": ["ok", "filtered"]}, "statuses"
            ),
            true("chk_filtered_has_reason", "every filtered face says why"),
            true("chk_crop_exists", "every face's aligned crop is in the store"),
            lineage,
        ],
        "embeddings": [
            columns("embeddings"),
            unique("chk_key"),
            true("chk_unit_norm", "vectors are L2-normalised"),
            true("chk_dim_matches", "vector length equals dim"),
            true("chk_face_usable", "only usable faces are embedded"),
            lineage,
        ],
        "clusters": [
            columns("clusters"),
            unique("face_id"),
            not_null("cluster_id"),
            between("doubt", 0.0, None),
            true("chk_face_known", "clusters refer to known faces"),
            true("chk_traceable", "every face going into the dataset traces back to a stored image"),
            lineage,
        ],
        "identities": [
            columns("identities"),
            unique("query_name"),
            Check(  # a name a person accepted in review is theirs to vouch for (facedata review)
                "ExpectColumnValuesToBeBetween",
                {
                    "column": "confidence",
                    "min_value": v["min_dominant_confidence"],
                    "max_value": 1.0,
                    "row_condition": "chk_accepted_in_review!=True",
                    "condition_parser": "pandas",
                },
                f"each name's dominant cluster holds >= {v['min_dominant_confidence']:.0%} of its images "
                "(names accepted in review excepted)",
            ),
            between(
                "n_members",
                v["min_faces_per_identity"],
                None,
                f"each name's cluster holds >= {v['min_faces_per_identity']} faces",
            ),
            lineage,
        ],
    }
    if has_labels:
        out["labelled_metrics"] = [
            between("purity", v["min_purity"], 1.0, f"purity >= {v['min_purity']} against labels"),
            between("bcubed_f", v["min_bcubed_f"], 1.0, f"BCubed F >= {v['min_bcubed_f']} against labels"),
        ]
    return out


def _key_columns(name: str, df: pd.DataFrame) -> list[str]:
    keys = [k for k in manifest.KEYS.get(name, ()) if k in df]
    return keys


def run_suites(frames: dict[str, pd.DataFrame], checks: dict[str, list[Check]], max_examples: int) -> dict:
    """Validate every frame with GX; returns the report dict."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("facedata")
    report: dict[str, Any] = {"success": True, "manifests": {}}
    for name, suite_checks in checks.items():
        df = frames[name].reset_index(drop=True)
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        added = [suite.add_expectation(getattr(gxe, chk.expectation)(**chk.kwargs)) for chk in suite_checks]
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        if len(df) == 0:
            report["manifests"][name] = {"success": True, "n_rows": 0, "checks": [], "note": "empty manifest"}
            continue
        result = definition.run(batch_parameters={"dataframe": df}, result_format={"result_format": "COMPLETE"})
        # GX does not return results in the order the expectations were added: match each one by its id.
        by_id = {str(res.expectation_config.id): res for res in result.results}
        entries = [
            _entry(name, df, chk, by_id.get(str(exp.id)), max_examples)
            for chk, exp in zip(suite_checks, added, strict=True)
        ]
        ok = all(e["success"] for e in entries)
        report["manifests"][name] = {"success": ok, "n_rows": int(len(df)), "checks": entries}
        report["success"] &= ok
    return report


def _entry(name: str, df: pd.DataFrame, chk: Check, res, max_examples: int) -> dict:
    """The report entry of one check from its own GX result (None: GX returned none for it, a failure)."""
    entry: dict[str, Any] = {
        "expectation": _snake(chk.expectation),
        "column": chk.kwargs.get("column"),
        "kwargs": {k: v for k, v in chk.kwargs.items() if k != "column"},
        "why": chk.why,
        "success": False,
        "unexpected_count": None,
        "unexpected_percent": None,
        "observed_value": None,
        "examples": [],
    }
    if res is None:
        entry["error"] = "Great Expectations returned no result for this check"
        return entry
    r = res.to_json_dict()
    config = r["expectation_config"]
    if config["type"] != entry["expectation"] or config["kwargs"].get("column") != entry["column"]:
        raise RuntimeError(f"GX result {config['type']}({config['kwargs']}) was matched to {entry}")
    detail = r.get("result") or {}
    entry.update(
        success=bool(r["success"]),
        unexpected_count=detail.get("unexpected_count"),
        unexpected_percent=detail.get("unexpected_percent"),
        observed_value=detail.get("observed_value"),
    )
    if r.get("exception_info", {}).get("raised_exception"):
        entry["error"] = r["exception_info"].get("exception_message")
    if not entry["success"]:
        idx = (detail.get("unexpected_index_list") or [])[:max_examples]
        show = _key_columns(name, df) + ([chk.kwargs["column"]] if chk.kwargs.get("column") else [])
        show = list(dict.fromkeys(c for c in show if c in df))
        entry["examples"] = [
            _plain(df.loc[int(i), show].to_dict()) for i in idx if isinstance(i, int | np.integer)
        ]
    return entry


def _snake(class_name: str) -> str:
    """`ExpectColumnValuesToBeUnique` -> `expect_column_values_to_be_unique` (GX's expectation type)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()


def _plain(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, float) and np.isnan(v):
            v = None
        elif not isinstance(v, str | int | float | bool | type(None)):
            v = str(v)
        out[k] = v
    return out


def failures(report: dict) -> list[str]:
    """One readable line per failed expectation."""
    lines = []
    for name, m in report["manifests"].items():
        for e in m["checks"]:
            if e["success"]:
                continue
            col = f"({e['column']})" if e["column"] else ""
            what = e["why"]
            count = ""
            if e["unexpected_count"] is not None:
                count = f": {e['unexpected_count']} of {m['n_rows']} rows ({e['unexpected_percent']:.1f}%)"
            elif e["observed_value"] is not None:
                count = f": observed {e['observed_value']}"
            example = f"; e.g. {e['examples'][0]}" if e["examples"] else ""
            lines.append(f"{name}: {e['expectation']}{col} failed — {what}{count}{example}")
    return lines


def render_html(report: dict) -> str:
    """A self-contained page (no CDN assets), readable offline."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>facedata validation</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}",
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}",
        ".ok{color:#176117}.bad{color:#a11;font-weight:bold}code{font-size:90%}</style></head><body>",
        f"<h1>facedata validation: <span class='{'ok' if report['success'] else 'bad'}'>"
        f"{'PASSED' if report['success'] else 'FAILED'}</span></h1>",
    ]
    for name, m in report["manifests"].items():
        state = "ok" if m["success"] else "bad"
        parts.append(
            f"<h2>{esc(name)} <span class='{state}'>({'pass' if m['success'] else 'FAIL'})</span>, "
            f"{m['n_rows']} rows</h2><table><tr><th>check</th><th>column</th><th>why</th><th>result</th>"
            "<th>example rows</th></tr>"
        )
        for e in m["checks"]:
            res = "pass" if e["success"] else "FAIL"
            if e["unexpected_count"]:
                res += f" ({e['unexpected_count']} rows, {e['unexpected_percent']:.1f}%)"
            ex = "<br>".join(esc(str(x)) for x in e["examples"])
            parts.append(
                f"<tr><td><code>{esc(e['expectation'])}</code></td><td>{esc(str(e['column'] or ''))}</td>"
                f"<td>{esc(e['why'])}</td><td class='{'ok' if e['success'] else 'bad'}'>{esc(res)}</td>"
                f"<td>{ex}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
