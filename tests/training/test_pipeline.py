"""The pipeline: the shipped config parses and wires the stages together; finished stages are skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from acula.training.pipeline import PipelineConfig, Progress, Stage, load_pipeline_config, resolve

REPO = Path(__file__).resolve().parents[2]


def test_default_config_is_valid_and_wired(tmp_path: Path) -> None:
    config = load_pipeline_config(REPO / "configs" / "default.toml")
    config = resolve(config.model_copy(update={"work_dir": tmp_path / "work"}), tmp_path / "data")
    work = tmp_path / "work"
    assert config.start == "pretrained" and config.model.encoder == "mobilenet"
    assert config.model.mobilenet.pretrained is not None and config.model.audio.sample_rate == 32000
    assert config.align.out_dir == work / "align"
    assert config.align.init_checkpoint == work / "pretrained" / "final.pt"
    assert config.align.reports == work / "reports.jsonl"
    assert config.align.data.root == tmp_path / "data"
    assert config.align.threads == config.threads == 2 and config.align.device == "cpu"


def test_the_cnn_recipe_still_starts_from_ssl(tmp_path: Path) -> None:
    config = load_pipeline_config(REPO / "configs" / "default-cnn.toml")
    config = resolve(config.model_copy(update={"work_dir": tmp_path / "work"}), tmp_path / "data")
    assert config.start == "ssl" and config.ssl.out_dir == tmp_path / "work" / "ssl"
    assert config.align.init_checkpoint == tmp_path / "work" / "ssl" / "final.pt"
    assert config.ssl.model.audio.window_seconds == 4.0 and config.ssl.model.audio.sample_rate == 8000


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[export]\nindx = "flat"\n')
    with pytest.raises(ValueError, match="indx"):
        load_pipeline_config(path)


def test_finished_stages_are_skipped_and_a_resumed_run_continues(tmp_path: Path) -> None:
    ran: list[str] = []

    def stage(name: str, fail: bool = False) -> Stage:
        done = tmp_path / f"{name}.done"

        def run() -> None:
            ran.append(name)
            if fail:
                raise RuntimeError(f"{name} crashed")
            done.write_text("ok")

        return Stage(name, done, run)

    (tmp_path / "reports.done").write_text("from an earlier run")
    with pytest.raises(RuntimeError, match="align crashed"):
        Progress([stage("reports"), stage("ssl"), stage("align", fail=True), stage("export")]).run()
    assert ran == ["ssl", "align"]

    ran.clear()
    timings = Progress([stage("reports"), stage("ssl"), stage("align"), stage("export")]).run()
    assert ran == ["align", "export"]
    assert set(timings) == {"align", "export"}


def test_a_stage_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="did not write"):
        Progress([Stage("silent", tmp_path / "never", lambda: None)]).run()


def test_pipeline_config_defaults_match_the_bundle_contract() -> None:
    config = PipelineConfig()
    assert config.export.index == "flat" and config.export.text_side
    assert config.name == "acula-default"


def test_overrides_replace_config_values() -> None:
    config = load_pipeline_config(
        REPO / "configs" / "default.toml", {"align.epochs": 1, "export.index": "hnsw", "notes": "quick run"}
    )
    assert config.align.epochs == 1 and config.export.index == "hnsw" and config.notes == "quick run"
    with pytest.raises(ValueError, match="index"):
        load_pipeline_config(REPO / "configs" / "default.toml", {"export.index": "annoy"})


@pytest.mark.slow
def test_pipeline_end_to_end_on_a_small_slice(shared_data: Path, tmp_path: Path) -> None:
    """Every stage on real SPRSound data, with a tiny model and few steps; then a resumed run does nothing."""
    from acula.service.bundle import load_manifest
    from acula.training.pipeline import run_pipeline

    tiny = {
        "datasets": ["sprsound"],
        "work_dir": str(tmp_path / "work"),
        "cache_dir": str(tmp_path / "cache"),
        "bench.enabled": False,
        "export.text_side": False,
        "notes": "Smoke test: tiny model, a few steps.",
        "ssl.max_steps": 2,
        "ssl.data.batch_size": 8,
        "ssl.data.max_recordings": 64,
        "ssl.progress": False,
        "ssl.model.embedding_dim": 32,
        "ssl.model.joint_dim": 16,
        "ssl.model.decoder_hidden": 16,
        "ssl.model.cnn.channels": [8, 16, 16, 16],
        "align.max_steps": 2,
        "align.data.batch_size": 8,
        "align.data.max_recordings": 64,
        "align.progress": False,
        "align.eval.enabled": False,
    }
    config = load_pipeline_config(REPO / "configs" / "default-cnn.toml", tiny)
    out = tmp_path / "bundle"
    timings = run_pipeline(config, shared_data, out)
    assert set(timings) == {"reports", "ssl", "align", "probes + export", "model card"}
    manifest = load_manifest(out)
    assert manifest.probes and all(p.metrics for p in manifest.probes)
    assert manifest.report_index is not None and manifest.report_index.count > 0
    assert manifest.provenance.training_config["ssl"]["max_steps"] == 2
    assert "Smoke test" in (out / "MODEL_CARD.md").read_text()
    assert run_pipeline(config, shared_data, out) == {}  # everything already done


@pytest.mark.slow
def test_pretrained_start_then_alignment_keeps_what_it_should(shared_data: Path, tmp_path: Path) -> None:
    """The default recipe's first stages on a few real recordings: the pretrained encoder saved as the start
    checkpoint, alignment from cached log-mels with self-distillation and frozen BatchNorm statistics."""
    import json

    import torch

    from acula.training.nets.factory import read_checkpoint
    from acula.training.pipeline import build_stages

    work, cache = tmp_path / "work", tmp_path / "cache"
    overrides = {
        "datasets": ["sprsound"],
        "work_dir": str(work),
        "cache_dir": str(cache),
        "align.max_steps": 2,
        "align.data.batch_size": 4,
        "align.data.max_recordings": 12,
        "align.progress": False,
        "align.eval.enabled": False,
    }
    config = resolve(load_pipeline_config(REPO / "configs" / "default.toml", overrides), shared_data)
    stages = build_stages(config, shared_data, tmp_path / "bundle", print)
    assert [stage.name for stage in stages[:3]] == ["pretrained", "reports", "align"]
    Progress(stages[:3]).run()

    start = read_checkpoint(work / "pretrained" / "final.pt")
    aligned = read_checkpoint(work / "align" / "final.pt")
    assert start["stage"] == "pretrained" and aligned["config"]["audio"] == start["config"]["audio"]
    assert aligned["config"]["audio"]["sample_rate"] == 32000
    batchnorm = [k for k in start["model"] if k.startswith("encoder.") and k.endswith("running_mean")]
    assert batchnorm and all(torch.equal(start["model"][k], aligned["model"][k]) for k in batchnorm)
    moved = [
        k
        for k in batchnorm
        if not torch.equal(
            start["model"][k.replace("running_mean", "weight")],
            aligned["model"][k.replace("running_mean", "weight")],
        )
    ]
    assert moved, "the encoder did not learn at all"
    rows = [json.loads(line) for line in (work / "align" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/contrastive", "loss/distill_features", "loss/distill_logits"} <= set(rows[-1])
    assert list(cache.glob("logmel-*/sprsound/*.npy")), "alignment did not train from cached log-mels"
