"""``acula bench`` end to end on the real data: a tiny model, its random init and openSMILE on one small task.

The task is registered here the way a user adds their own (one entry): participant sex from Coswara's deep
breathing recordings only, which keeps the run short. The run is repeated to show that features are cached.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from acula.service.bundle import AudioContract
from acula.service.cli import full_app
from acula.training.bench.tasks import TASKS, Task, coswara_sex, register
from acula.training.nets.factory import build_model, save_checkpoint
from acula.training.nets.frontend import FrontendConfig
from acula.training.nets.model import ModelConfig

app = full_app()

TASK = "coswara-deep-breathing-sex"


def _deep_breathing_sex(rec) -> int | None:
    return coswara_sex(rec) if Path(rec.audio_path).stem == "breathing-deep" else None


@pytest.fixture()
def user_task():
    task = register(
        Task(
            TASK,
            "coswara",
            "binary",
            _deep_breathing_sex,
            ("male", "female"),
            ("grouped-cv",),
            "Coswara deep breathing: participant sex.",
            prompts=("Deep breathing recorded from a man.", "Deep breathing recorded from a woman."),
        )
    )
    yield task
    del TASKS[TASK]


def _tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(123)  # not the --random-init row's seed (0), so the two rows have different weights
    config = ModelConfig(
        frontend=FrontendConfig(n_mels=32),
        embedding_dim=32,
        joint_dim=32,
        decoder_hidden=16,
        text_dim=384,  # the default teacher's width: a text head, so zero-shot and retrieval run too
        audio=AudioContract(window_seconds=2.0),
    )
    config.cnn.channels = [8, 16, 32]
    config.cnn.freq_pool = [True, True, False]
    return save_checkpoint(path, build_model(config))


def _reports(shared_data: Path, path: Path) -> Path:
    """Template reports (the project's default writer) for the task's recordings: the retrieval gallery."""
    from acula.training.data import load_records
    from acula.training.reports import ReportRow, append_reports
    from acula.training.reports.template import TemplateWriter

    writer = TemplateWriter(seed=0)
    records = [
        r for r in load_records(shared_data, datasets=["coswara"]) if _deep_breathing_sex(r) is not None
    ]
    append_reports(path, [ReportRow.from_report(r, writer.write(r)) for r in records])
    return path


@pytest.mark.slow
def test_acula_bench_end_to_end(shared_data: Path, tmp_path: Path, user_task: Task) -> None:
    checkpoint = _tiny_checkpoint(tmp_path / "tiny" / "final.pt")
    reports = _reports(shared_data, tmp_path / "reports.jsonl")
    args = ["bench", "--encoder", f"tiny={checkpoint}", "--random-init", "--baseline", "opensmile"]
    args += ["--tasks", TASK, "--seeds", "2", "--map", "pca", "--root", str(shared_data)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--reports", str(reports)]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--probe", "both", "--out", str(tmp_path / "run1")])
    assert first.exit_code == 0, first.output
    results = json.loads((tmp_path / "run1" / "results.json").read_text())
    entry = results["tasks"][TASK]
    assert set(entry["results"]) == {"tiny", "random-init", "opensmile"}
    test_side = entry["results"]["opensmile"]["logistic"]["grouped-cv"]["n_eval"]
    assert 0 < test_side < entry["recordings"]
    for row in entry["results"].values():
        logistic, opera = row["logistic"]["grouped-cv"], row["opera"]["grouped-cv"]
        assert 0.0 <= logistic["pooled"] <= 1.0
        assert len(opera["seeds"]) == 2 and opera["n_eval"] == test_side
    assert set(results["zero_shot"][TASK]) == {"tiny", "random-init"}  # openSMILE has no text side
    retrieval = results["retrieval"][TASK]["tiny"]
    assert retrieval["queries"] == test_side and 0.0 <= retrieval["recall@10"] <= 1.0
    for plot in results["plots"][TASK]:
        assert (tmp_path / "run1" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plots/reliability-{TASK}.png" in results["plots"][TASK]
    for name in ("tiny", "random-init", "opensmile"):  # the logistic probe is calibrated: ECE before, after
        calibration = results["calibration"][TASK][name]
        assert 0.0 <= calibration["ece"] <= 1.0 and 0.0 <= calibration["ece_before_calibration"] <= 1.0
    table = (tmp_path / "run1" / "results.md").read_text()
    assert all(name in table for name in ("tiny", "random-init", "opensmile", TASK, "OPERA", "Calibration"))

    second = runner.invoke(app, [*args, "--probe", "logistic", "--out", str(tmp_path / "run2"), "--no-plots"])
    assert second.exit_code == 0, second.output
    again = json.loads((tmp_path / "run2" / "results.json").read_text())
    first_times, second_times = results["meta"]["timings_s"], again["meta"]["timings_s"]
    print("first run", first_times, "second run", second_times)
    assert second_times["features/opensmile"] < first_times["features/opensmile"] / 4  # read from the cache
    for name in ("tiny", "random-init", "opensmile"):  # the same features give the same logistic numbers
        a = entry["results"][name]["logistic"]["grouped-cv"]["pooled"]
        b = again["tasks"][TASK]["results"][name]["logistic"]["grouped-cv"]["pooled"]
        assert np.isclose(a, b)
