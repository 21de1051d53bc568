"""SSL then alignment on real shared audio with a tiny model: a few steps each, the losses fall.

Records are built here straight from the SPRSound release (file names + its JSON labels), so this test
does not depend on the dataset adapters; reports are one short sentence from the record label.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from acula.service.bundle import AudioContract
from acula.training.data.records import Recording
from acula.training.nets.cnn import CNNConfig
from acula.training.nets.factory import load_checkpoint
from acula.training.nets.frontend import FrontendConfig
from acula.training.nets.model import ModelConfig
from acula.training.train.config import (
    AlignConfig,
    AlignLossWeights,
    CheckpointConfig,
    DataConfig,
    OptimConfig,
    SSLConfig,
)

torch.set_num_threads(2)


class _Meta(BaseModel):
    label: str


def _sprsound_records(root: Path, per_split: int) -> list[Recording]:
    base = root / "sprsound"
    if not base.is_dir():
        pytest.skip(f"shared data not found at {base}")
    out = []
    sources = [("train", base / "train_wav", [base / "train_json"])]
    sources.append(
        (
            "test",
            base / "test_wav",
            [base / "test_json" / "intra_test_json", base / "test_json" / "inter_test_json"],
        )
    )
    for split, wav_dir, json_dirs in sources:
        files = sorted(wav_dir.glob("*.flac"))[: per_split * 3 : 3]
        for path in files:
            label = next(
                json.loads(p.read_text())["record_annotation"]
                for d in json_dirs
                if (p := d / f"{path.stem}.json").is_file()
            )
            out.append(
                Recording(
                    dataset="sprsound",
                    recording_id=path.stem,
                    subject_id=path.stem.split("_")[0],
                    audio_path=path,
                    native_rate=8000,
                    duration_s=None,
                    split=split,
                    metadata=_Meta(label=label),
                    labels={"record_label": label},
                )
            )
    return out


def _reports(records: list[Recording]) -> list[dict]:
    return [
        {
            "report_id": f"r-{r.recording_id}",
            "recording_id": r.recording_id,
            "dataset": r.dataset,
            "split": r.split,
            "text": f"Paediatric lung auscultation. Overall finding: {r.labels['record_label']}.",
        }
        for r in records
    ]


def _tiny_model() -> ModelConfig:
    return ModelConfig(
        frontend=FrontendConfig(n_mels=32),
        cnn=CNNConfig(channels=[8, 16, 32], freq_pool=[True, True, False]),
        embedding_dim=32,
        joint_dim=32,
        decoder_hidden=16,
        audio=AudioContract(window_seconds=2.0),
    )


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_ssl_then_align_losses_fall(shared_data: Path, tmp_path: Path) -> None:
    records = _sprsound_records(shared_data, per_split=32)
    train_side = [r for r in records if r.is_training_side]
    data = DataConfig(root=shared_data, cache_dir=tmp_path / "cache", batch_size=8)
    common = dict(epochs=1, log_every=1, progress=False, threads=2, data=data)

    ssl_cfg = SSLConfig(
        out_dir=tmp_path / "ssl",
        model=_tiny_model(),
        max_steps=16,
        optim=OptimConfig(lr=3e-3, warmup_steps=2),
        checkpoint=CheckpointConfig(every_steps=4),
        **common,
    )
    from acula.training.train.ssl import run_ssl

    # Resume: stop at 8 steps, then the same run continues to 16 from last.pt.
    run_ssl(ssl_cfg.model_copy(update={"max_steps": 8}), records=train_side)
    assert len(_rows(tmp_path / "ssl" / "metrics.jsonl")) == 8
    ssl_final = run_ssl(ssl_cfg, records=train_side)
    rows = _rows(tmp_path / "ssl" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 17))
    first, last = sum(r["loss"] for r in rows[:4]) / 4, sum(r["loss"] for r in rows[-4:]) / 4
    assert last < first, f"SSL loss did not fall: {first:.3f} -> {last:.3f}"
    assert (tmp_path / "ssl" / "loss.png").stat().st_size > 0
    assert load_checkpoint(ssl_final).config.text_dim is None

    align_cfg = AlignConfig(
        out_dir=tmp_path / "align",
        init_checkpoint=ssl_final,
        max_steps=24,
        optim=OptimConfig(lr=3e-3, warmup_steps=2),
        loss_weights=AlignLossWeights(contrastive=1.0, cka=0.1, masked_spectrogram=0.1),
        **common,
    )
    from acula.training.train.align import run_align

    aligned_path = run_align(align_cfg, records=records, reports=_reports(records))
    rows = _rows(tmp_path / "align" / "metrics.jsonl")
    assert {"loss/contrastive", "loss/cka", "loss/masked_spectrogram", "logit_scale"} <= set(rows[0])
    first = sum(r["loss/contrastive"] for r in rows[:6]) / 6
    last = sum(r["loss/contrastive"] for r in rows[-6:]) / 6
    assert last < first, f"contrastive loss did not fall: {first:.3f} -> {last:.3f}"
    aligned = load_checkpoint(aligned_path)
    assert aligned.config.text_dim == 384 and aligned.text_head is not None
    result = json.loads((tmp_path / "align" / "retrieval.json").read_text())
    assert set(result["results"]) == {"ssl", "aligned"}
    assert 0.0 <= result["results"]["aligned"]["joint_all"] <= 1.0


@pytest.mark.slow
def test_align_refuses_test_side_pairs_only(shared_data: Path, tmp_path: Path) -> None:
    from acula.training.train.align import run_align

    records = [r for r in _sprsound_records(shared_data, per_split=4) if not r.is_training_side]
    cfg = AlignConfig(out_dir=tmp_path / "a", model=_tiny_model(), max_steps=1, progress=False)
    with pytest.raises(ValueError, match="no training-side recording"):
        run_align(cfg, records=records, reports=_reports(records))


REPO = Path(__file__).resolve().parents[2]


def test_shipped_configs_validate_and_overrides_apply() -> None:
    from acula.training.train.config import load_config

    ssl = load_config(REPO / "configs" / "ssl.toml", SSLConfig, {"epochs": 1, "data.batch_size": 4})
    assert ssl.epochs == 1 and ssl.data.batch_size == 4 and ssl.mask_ratio == 0.7
    align = load_config(REPO / "configs" / "align.toml", AlignConfig)
    assert align.init_checkpoint == Path("runs/ssl/final.pt") and align.contrastive == "infonce"
    assert ssl.model.audio.window_seconds == 4.0 and ssl.model.audio.hop_seconds == 4.0


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    from acula.training.train.config import load_config

    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 2\nlearning_rate = 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(bad, SSLConfig)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml", SSLConfig)


def test_cli_overrides_parse_toml_scalars() -> None:
    from acula.training.commands.train import _overrides

    assert _overrides(["epochs=2", "optim.lr=1e-3", "data.root=../x", "progress=false"]) == {
        "epochs": 2,
        "optim.lr": 1e-3,
        "data.root": "../x",
        "progress": False,
    }


@pytest.mark.parametrize("encoder", ["cnn", "vit"])
def test_objectives_fit_a_fixed_batch(encoder: str) -> None:
    """Both encoders learn: SSL and alignment losses fall when one small batch is repeated."""
    from acula.training.nets.factory import build_model
    from acula.training.nets.vit import ViTConfig
    from acula.training.train.align import AlignObjective
    from acula.training.train.ssl import SSLObjective

    torch.manual_seed(0)
    config = _tiny_model().model_copy(update={"encoder": encoder, "text_dim": 12})
    config.vit = ViTConfig(patch=8, dim=32, depth=2, heads=2)
    model = build_model(config)
    wave = torch.randn(6, 16000) * torch.linspace(0.1, 1.0, 6)[:, None]
    table = torch.nn.functional.normalize(torch.randn(3, 12), dim=1)
    weights = {"contrastive": 1.0, "cka": 0.0, "masked_spectrogram": 0.1}
    for objective, batch in [
        (SSLObjective(model, 0.7), (wave,)),
        (
            AlignObjective(model, table, "infonce", 0.7, weights, 0.5),
            (wave, torch.tensor([0, 1, 2, 0, 1, 2])),
        ),
    ]:
        optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
        losses = []
        for _ in range(15):
            parts = objective(*batch)
            loss = sum(weights.get(k, 1.0) * v for k, v in parts.items())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        assert sum(losses[-3:]) < sum(losses[:3]), f"{type(objective).__name__}: {losses}"


def _record(rid: str, split: str, audio: bool = True) -> Recording:
    return Recording(
        dataset="d",
        recording_id=rid,
        subject_id=rid,
        audio_path=Path(f"/nowhere/{rid}.flac") if audio else None,
        native_rate=8000,
        duration_s=1.0,
        split=split,
        metadata=_Meta(label="x"),
    )


def test_pairs_keep_sides_apart_and_share_identical_texts() -> None:
    from acula.training.train.pairs import build_pairs

    records = [
        _record("a", "train"),
        _record("b", "train"),
        _record("c", "test-inter"),
        _record("e", "train", False),
    ]
    reports = [
        {"dataset": "d", "recording_id": "a", "split": "train", "text": "normal"},
        {"dataset": "d", "recording_id": "a", "split": "train", "text": "wheeze"},
        {"dataset": "d", "recording_id": "b", "split": "train", "text": "normal"},
        {"dataset": "d", "recording_id": "b", "split": "test", "text": "mislabelled report"},
        {"dataset": "d", "recording_id": "c", "split": "test", "text": "crackle"},
        {"dataset": "d", "recording_id": "e", "split": "train", "text": "no audio"},
    ]
    train = build_pairs(records, reports, "train")
    assert [r.recording_id for r in train.records] == ["a", "b"]
    assert train.texts == ["normal", "wheeze"] and train.text_indices == [[0, 1], [0]]
    test = build_pairs(records, reports, "test")
    assert [r.recording_id for r in test.records] == ["c"] and test.texts == ["crackle"]
    assert train.keep([records[1]]).text_indices == [[0]]


def test_recall_and_chance() -> None:
    import numpy as np

    from acula.training.train.retrieval import chance_recall, recall_at_k

    gallery = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0.1, 0, 0], [0, 0.9, 0.1, 0], [0, 0.2, 0, 1]], dtype=np.float32)
    assert recall_at_k(queries, gallery, [[0], [2], [1]], k=1) == 1 / 3
    assert recall_at_k(queries, gallery, [[0], [1], [3]], k=1) == 1.0
    assert recall_at_k(queries, gallery, [[0], [2], [1]], k=2) == 1.0
    assert recall_at_k(queries, gallery, [[2], [3], [2]], k=2) == 0.0
    assert recall_at_k(queries, gallery, [[2, 1], [3], [2]], k=2) == 1 / 3
    assert chance_recall(4, [[0]], k=1) == 0.25
    assert chance_recall(4, [[0, 1]], k=2) == 1 - 1 / 6
    assert chance_recall(3, [[0]], k=5) == 1.0
