"""The template writer and ``acula reports build | validate | stats`` on real records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from acula.service.cli import full_app
from acula.training.data import load_records
from acula.training.data.records import Recording
from acula.training.reports.schema import load_reports
from acula.training.reports.template import TemplateWriter

app = full_app()


@pytest.fixture(scope="module")
def records(shared_data: Path) -> list[Recording]:
    return load_records(shared_data, ["sprsound", "icbhi2017", "hls_cmds", "circor2022"])


def test_deterministic_per_seed_and_varied(records: list[Recording]) -> None:
    sample = records[::50]
    first = [TemplateWriter(3).write(r).text for r in sample]
    assert first == [TemplateWriter(3).write(r).text for r in sample]
    other = [TemplateWriter(4).write(r).text for r in sample]
    assert sum(a != b for a, b in zip(first, other, strict=True)) > len(sample) // 4
    spr = [TemplateWriter(0).write(r).text for r in records if r.dataset == "sprsound"]
    assert len(set(spr)) > len(spr) // 3  # not one sentence repeated


def test_states_the_metadata_as_normalised_facts(records: list[Recording]) -> None:
    record = next(r for r in records if r.dataset == "sprsound" and "Wheeze" in r.labels["events"])  # type: ignore[operator]
    report = TemplateWriter().write(record)
    assert f"site:{record.site}" in report.facts and f"label:{record.labels['record_label']}" in report.facts
    assert f"age_years:{record.labels['age_years']:g}" in report.facts and "finding:wheeze" in report.facts
    assert "wheezes" in report.text and record.site in report.text  # type: ignore[operator]


def test_physionet_reports_are_short_and_honest(shared_data: Path) -> None:
    physionet = load_records(shared_data, ["physionet2016"])[:200]
    for record in physionet:
        report = TemplateWriter().write(record)
        status = "abnormal" if record.labels["abnormal"] else "normal"
        assert report.facts == [f"label:{status}"] and len(report.text.split()) <= 20
        assert status in report.text


def test_build_validate_stats_cli(shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "reports.jsonl"
    args = [
        "reports",
        "build",
        "--root",
        str(shared_data),
        "--out",
        str(out),
        "-d",
        "icbhi2017",
        "-d",
        "hls_cmds",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "566 written" in result.output
    rows = load_reports(out)
    assert len(rows) == 566 and {r.dataset for r in rows} == {"icbhi2017", "hls_cmds"}
    keys = [
        "report_id",
        "recording_id",
        "dataset",
        "split",
        "text",
        "facts",
        "writer",
        "model",
        "prompt_hash",
        "labels",
    ]
    assert set(json.loads(out.read_text().splitlines()[0])) >= set(keys)
    assert "0 written, 566 already present" in runner.invoke(app, args).output  # resumable: nothing redone
    valid = runner.invoke(app, ["reports", "validate", str(out), "--root", str(shared_data)])
    assert valid.exit_code == 0 and "566 reports, 0 failed" in valid.output
    lines = out.read_text().splitlines()
    tampered = json.loads(lines[0])
    tampered["text"] += " Coarse crackles at the right base; recommend antibiotics."
    out.write_text("\n".join([json.dumps(tampered), *lines[1:]]) + "\n")
    invalid = runner.invoke(app, ["reports", "validate", str(out), "--root", str(shared_data)])
    assert invalid.exit_code == 1 and "care_recommendation" in invalid.output and "1 failed" in invalid.output
    stats = runner.invoke(app, ["reports", "stats", str(out), "--json"])
    numbers = json.loads(stats.stdout)
    assert (
        numbers["reports"] == 566 and numbers["distinct_sentences"] > 50 and numbers["vocabulary_size"] > 100
    )
