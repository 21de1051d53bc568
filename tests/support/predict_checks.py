"""Checks shared by the CLI and default-bundle tests: real recordings, and CLI output equal to HTTP output."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from typer.testing import CliRunner

from acula.service.cli import full_app
from tests.support.server import LiveServer

app = full_app()


# The CLI reads the same ACULA_* settings as the service; the live server runs with one intra-op thread, and
# onnxruntime's summation order (hence the last bit of a float32) depends on threads and batch size.
runner = CliRunner(env={"ACULA_INTRA_OP_THREADS": "1"})


def real_recordings(shared_data: Path) -> list[Path]:
    """The first recording of every dataset folder: 2, 4, 8 and 16 kHz, heart, lung, cough, manikin."""
    found = []
    for folder in sorted(p for p in shared_data.iterdir() if p.is_dir()):
        files = sorted(folder.rglob("*.flac")) + sorted(folder.rglob("*.wav"))
        if files:
            found.append(files[0])
    return found


def same_prediction(server: LiveServer, bundle: Path, paths: list[Path]) -> list[dict]:
    """``acula predict --json`` on each path equals the live server's ``/predict``; returns the answers."""
    answers = []
    for path in paths:
        result = runner.invoke(
            app,
            ["predict", "--bundle", str(bundle), str(path), "--json", "--top-k", "3", "--per-window"],
        )
        assert result.exit_code == 0, result.output
        cli = json.loads(result.output)
        http = httpx.post(
            f"{server.url}/predict",
            params={"top_k": 3, "per_window": "true"},
            files={"file": (path.name, path.read_bytes())},
            timeout=30.0,
        ).json()
        for key in ("model", "input", "windows", "tasks", "reports", "window_scores"):
            assert cli[key] == http[key], (path.name, key)
        answers.append(http)
    return answers
