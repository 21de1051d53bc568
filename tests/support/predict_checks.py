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


# Every key of a /predict answer that does not depend on timing: the CLI must print exactly these.
ANSWER_KEYS = (
    "model",
    "input",
    "windows",
    "sound_type",
    "out_of_distribution",
    "tasks",
    "skipped",
    "warnings",
    "reports",
    "window_scores",
)


def same_prediction(
    server: LiveServer, bundle: Path, paths: list[Path], stated: dict[str, str] | None = None
) -> list[dict]:
    """``acula predict --json`` on each path equals the live server's ``/predict``; returns the answers.

    ``stated`` (``sound_type``, ``age_group``, ``site``) goes to both as options and query parameters. A
    recording the service refuses as not_auscultation (422) must make the CLI fail with that code; its
    problem document is returned in place of an answer.
    """
    stated = stated or {}
    flags = [part for name, value in stated.items() for part in (f"--{name.replace('_', '-')}", value)]
    answers = []
    for path in paths:
        result = runner.invoke(
            app,
            ["predict", "--bundle", str(bundle), str(path), "--json", "--top-k", "3", "--per-window", *flags],
        )
        response = httpx.post(
            f"{server.url}/predict",
            params={"top_k": 3, "per_window": "true", **stated},
            files={"file": (path.name, path.read_bytes())},
            timeout=30.0,
        )
        if response.status_code == 422 and response.json()["code"] == "not_auscultation":
            assert result.exit_code == 1 and "[not_auscultation]" in result.output, result.output
            answers.append(response.json())
            continue
        assert result.exit_code == 0, result.output
        cli, http = json.loads(result.output), response.json()
        for key in ANSWER_KEYS:
            assert cli.get(key) == http.get(key), (path.name, key)
        answers.append(http)
    return answers
