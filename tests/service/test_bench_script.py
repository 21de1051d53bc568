"""``scripts/bench_service.py`` still runs end to end (a tiny bundle, a few requests): the benchmark behind
the figures in docs/PERFORMANCE.md must stay re-runnable with one command. Checks accounting, not timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("mode", "first_line"),
    [
        ("--tiny", "bundle acula-tiny 0.0.1-test; 10 s recordings = 4 windows"),
        # The tiny encoder on the default bundle's audio contract (8 kHz, 4-s windows, 4-s hop).
        ("--floor", "bundle acula-floor 0.0.1-test; 10 s recordings = 3 windows"),
    ],
)
def test_bench_service_runs_and_accounts_for_every_request(
    tmp_path: Path, mode: str, first_line: str
) -> None:
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(REPO / "scripts" / "bench_service.py"),
        mode,
        "--concurrency", "1", "3",
        "--requests", "12",
        "--raw-seconds", "0.2",
        "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(first_line), result.stdout
    report = json.loads(out.read_text())
    assert [row["concurrency"] for row in report["service"]] == [1, 3]
    assert len(report["raw_rounds"]) == 3  # before, between and after the two phases
    for row in report["service"]:
        assert row["requests"] == 12 and row["failures"] == 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["service_over_raw"] > 0 and row["raw_config"] in report["raw_rounds"][0]
        assert row["cpu_efficiency"] > 0 and row["core_share"] > 0
    assert "p99/p50 at c=8" not in result.stdout  # no c=8 phase was asked for
