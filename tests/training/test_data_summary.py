"""``acula data summary`` and ``acula data splits`` through the real CLI, on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from acula.service.cli import full_app

app = full_app()


pytestmark = pytest.mark.slow


def test_summary_json_matches_the_data_readme(shared_data: Path) -> None:
    result = CliRunner().invoke(app, ["data", "summary", "--root", str(shared_data), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    recordings = {name: block["recordings"] for name, block in summary.items()}
    assert recordings == {
        "sprsound": 2683,
        "physionet2016": 3240,
        "bmd_hs": 872,
        "coswara": 274,
        "hls_cmds": 535,
        "icbhi2017": 31,
        "circor2022": 942,
    }
    spr = summary["sprsound"]["splits"]
    assert {k: v["recordings"] for k, v in spr.items()} == {
        "train": 1949,
        "test-intra": 379,
        "test-inter": 355,
    }
    assert spr["test-inter"]["labels"]["record_label"]["CAS"] == 65
    assert summary["bmd_hs"]["splits"]["train"]["labels"]["N"]["unlabelled"] == 8
    assert summary["coswara"]["skipped"] == {
        "empty audio file (0 bytes)": 8,
        "silent audio (every sample is zero)": 22,
    }
    assert summary["icbhi2017"]["skipped"] == {
        "missing audio (.wav or .flac) for a recording of the official split": 890
    }
    assert summary["circor2022"]["hours"] == 0 and summary["sprsound"]["hours"] > 8
    assert summary["physionet2016"]["subjects"] == 3240


def test_summary_text_and_splits_command(shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["data", "summary", "--root", str(shared_data), "-d", "hls_cmds"])
    assert text.exit_code == 0 and "hls_cmds: 535 recordings" in text.output
    out = tmp_path / "splits.json"
    result = runner.invoke(
        app, ["data", "splits", "--root", str(shared_data), "--out", str(out), "-d", "bmd_hs"]
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    committed = json.loads((Path(__file__).parents[2] / "training/data/splits.json").read_text())
    assert written["datasets"]["bmd_hs"] == committed["datasets"]["bmd_hs"]


def test_summary_explains_a_wrong_root(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "summary", "--root", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "does not exist" in str(result.exception)


def test_summary_accounts_for_every_file_of_the_release(shared_data: Path) -> None:
    """Coswara's README count (304) is recordings read plus files skipped with a reason."""
    args = ["data", "summary", "--root", str(shared_data), "-d", "coswara"]
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "coswara: 274 recordings, 71 subjects" in text.output
    assert "304 listed (recordings + skipped)" in text.output
    assert "skipped 22: silent audio (every sample is zero)" in text.output
    out = CliRunner().invoke(app, [*args, "--json"]).stdout
    block = json.loads(out[out.index("{") :])
    assert block["coswara"]["in_release"] == 304
