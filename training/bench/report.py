"""``results.json`` (every number) and ``results.md`` (the tables a person reads) from one run's results.

The markdown is generated, never edited: each cell is ``mean ± std`` with the std's meaning stated under the
table, and every number in it is also in results.json. NaN (a metric undefined on a one-class subset) is
written as ``null`` in JSON and ``n/a`` in markdown.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SCHEME_LABEL = {"official": "official test", "grouped-cv": "grouped 5-fold", "lodo": "leave-one-source-out"}


def _clean(value: Any) -> Any:
    """NaN/inf -> None, recursively, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.3f}"
    if std is not None and not math.isnan(std):
        text += f" ± {std:.3f}"
    return text


def _columns(tasks: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(task, scheme, subset) per column: the headline of each scheme, plus official subsets."""
    columns: list[tuple[str, str, str | None]] = []
    for name, entry in tasks.items():
        for scheme in entry["schemes"]:
            columns.append((name, scheme, None))
            if scheme == "official":
                first = next(iter(entry["results"].values()))
                subsets = next(iter(first.values()))[scheme]["subsets"]
                columns += [(name, scheme, s) for s in subsets if s != "all"]
    return columns


def probe_table(tasks: dict[str, Any], probe: str) -> list[str]:
    columns = _columns(tasks)
    header = ["row"] + [
        f"{task} {tasks[task]['metric']} ({subset or SCHEME_LABEL[scheme]})"
        for task, scheme, subset in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    encoders = list(next(iter(tasks.values()))["results"])
    for encoder in encoders:
        cells = [encoder]
        for task, scheme, subset in columns:
            result = tasks[task]["results"][encoder].get(probe, {}).get(scheme)
            if result is None:
                cells.append("")
            elif subset is None:
                cells.append(_fmt(result["value"], result["std"]))
            else:
                cells.append(_fmt(result["subsets"].get(subset)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def retrieval_table(retrieval: dict[str, Any]) -> list[str]:
    lines = [
        "| task | row | queries | gallery | R@1 (chance) | R@5 (chance) | R@10 (chance) "
        "| label P@5 (prior) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, rows in retrieval.items():
        for encoder, m in rows.items():
            recall = [f"{_fmt(m[f'recall@{k}'])} ({_fmt(m[f'chance_recall@{k}'])})" for k in (1, 5, 10)]
            lines.append(
                f"| {task} | {encoder} | {int(m['queries'])} | {int(m['gallery'])} | "
                + " | ".join(recall)
                + f" | {_fmt(m['label_precision@5'])} ({_fmt(m['label_prior'])}) |"
            )
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    tasks = results["tasks"]
    out = ["# acula bench", ""]
    if meta:
        out += [
            f"Created {meta.get('created')} on {meta.get('machine')}; "
            f"total {meta['timings_s'].get('total')} s wall, {meta['timings_s'].get('cpu/total')} s CPU.",
            f"Rows: {', '.join(meta['encoders'])}. Data: `{meta.get('root')}`.",
            "",
        ]
    for probe in meta.get("probes", ["logistic"]):
        if not tasks:
            break
        title = "OPERA linear probe" if probe == "opera" else "standardised logistic / ridge probe"
        out += [f"## {title}", ""] + probe_table(tasks, probe) + [""]
        if probe == "opera":
            seeds = len(meta.get("opera", {}).get("seeds", [])) or "several"
            out.append(
                f"Mean ± standard deviation over {seeds} seeds (each seed: mean over the scheme's splits)."
            )
        else:
            out.append("± = standard deviation over the scheme's splits (folds or held-out sources).")
        out += ["AUROC: higher is better; MAE (years): lower is better.", ""]
    counts = [f"{name}: {e['recordings']} recordings, {e['subjects']} subjects" for name, e in tasks.items()]
    if counts:
        out += ["Recordings per task: " + "; ".join(counts) + ".", ""]
    if results.get("zero_shot"):
        names = sorted({enc for rows in results["zero_shot"].values() for enc in rows})
        out += ["## Zero-shot AUROC (class descriptions through the text side, no probe)", ""]
        out += ["| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for task, rows in results["zero_shot"].items():
            out.append(f"| {task} | " + " | ".join(_fmt(rows.get(n)) for n in names) + " |")
        out.append("")
    if results.get("calibration"):
        out += calibration_table(results["calibration"], meta.get("probes", ["logistic"])[0])
    if results.get("retrieval"):
        out += ["## Audio -> report retrieval (test side)", ""] + retrieval_table(results["retrieval"]) + [""]
    return "\n".join(out) + "\n"


def calibration_table(calibration: dict[str, Any], probe: str) -> list[str]:
    """Expected calibration error per task and row, before and after calibration."""
    names = sorted({enc for rows in calibration.values() for enc in rows})
    lines = [f"## Calibration of the {probe} probe (test side; reliability diagrams in plots/)", ""]
    lines += ["| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for task, rows in calibration.items():
        cells = []
        for name in names:
            entry = rows.get(name, {})
            before = entry.get("ece_before_calibration")
            cells.append(
                _fmt(entry.get("ece")) if before is None else f"{_fmt(before)} -> {_fmt(entry.get('ece'))}"
            )
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines + [
        "",
        "ECE: expected calibration error, 10 equal-width bins (lower is better); a -> b: "
        "without -> with the temperature and shift fitted on out-of-fold training-side logits.",
        "",
    ]


def write_report(out: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    json_path.write_text(json.dumps(_clean(results), indent=2, allow_nan=False) + "\n")
    md_path = out / "results.md"
    md_path.write_text(markdown(results))
    return json_path, md_path
