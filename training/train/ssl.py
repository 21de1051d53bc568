"""Self-supervised pretraining by masked spectrogram modelling (SimMIM-style, ~70% of patches hidden).

Runs on the TRAINING-SIDE audio of every dataset (``Recording.is_training_side``): test-side recordings
are never seen before evaluation, not even without labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from acula.training.data.records import Recording
from acula.training.losses import masked_spectrogram_loss, random_patch_mask
from acula.training.nets.factory import build_model, load_external_weights
from acula.training.nets.model import AculaAudioModel
from acula.training.train.audio_dataset import AudioCache, CropDataset
from acula.training.train.config import SSLConfig
from acula.training.train.loop import param_groups, train

T = TypeVar("T")


def float32_logmel(model: AculaAudioModel, waveform: torch.Tensor) -> torch.Tensor:
    """The front-end outside autocast: a bf16/fp16 power spectrum loses the quiet bands entirely."""
    with torch.autocast(waveform.device.type, enabled=False):
        return model.frontend(waveform.float())


class SSLObjective(nn.Module):
    """``waveform (B, S)`` -> ``{"masked_spectrogram": loss}``."""

    def __init__(self, model: AculaAudioModel, mask_ratio: float) -> None:
        super().__init__()
        self.model = model
        self.mask_ratio = mask_ratio

    def forward(
        self, waveform: torch.Tensor, _record_index: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        spec = float32_logmel(self.model, waveform)  # (B, S) -> (B, 1, F, T)
        fp, tp = self.model.grid_shape(spec.shape[-1])
        mask = random_patch_mask(len(spec), fp, tp, self.mask_ratio, device=spec.device)  # (B, Fp, Tp)
        pred, target = self.model.reconstruct(spec, mask)  # (B, Fp * Tp, pf * pt) each
        return {"masked_spectrogram": masked_spectrogram_loss(pred, target, mask)}


def training_side_records(
    root: Path, datasets: list[str] | None, max_recordings: int | None, seed: int
) -> list[Recording]:
    """Every training-side recording with audio (optionally a seeded random subset)."""
    try:
        from acula.training.data import load_records
    except ImportError as exc:
        raise RuntimeError(
            "training.data.load_records is not available: the dataset adapters are missing"
        ) from exc
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist: set data.root to the shared data folder")
    records = [r for r in load_records(root, datasets) if r.is_training_side]
    return subset(records, max_recordings, seed)


def subset(items: list[T], limit: int | None, seed: int) -> list[T]:
    """At most ``limit`` items, a seeded random choice kept in the original order."""
    if limit is None or len(items) <= limit:
        return items
    keep = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
    return [items[i] for i in sorted(keep)]


def run_ssl(config: SSLConfig, records: list[Recording] | None = None) -> Path:
    """Pretrain; returns ``<run_dir>/final.pt``. ``records`` overrides loading them from ``config.data``."""
    if records is None:
        records = training_side_records(
            config.data.root, config.data.datasets, config.data.max_recordings, config.seed
        )
    else:
        leaked = [r.recording_id for r in records if not r.is_training_side]
        if leaked:
            raise ValueError(f"SSL may only see training-side recordings; got test-side {leaked[:5]}")
        records = subset(records, config.data.max_recordings, config.seed)
    torch.manual_seed(config.seed)
    model = build_model(config.model)
    if config.init_checkpoint is not None:
        renames = config.init_key_prefixes

        def key_map(key: str) -> str:
            for old, new in renames.items():
                if key.startswith(old):
                    return new + key[len(old) :]
            return key

        load_external_weights(model, config.init_checkpoint, key_map=key_map if renames else None)
    cache = AudioCache(config.data.cache_dir, model.sample_rate)
    records = cache.prepare(records, progress=config.progress)
    window = model.config.audio.window_samples  # a crop is one window of the model's contract
    dataset = CropDataset(records, cache, window, config.data.crops_per_recording, config.seed)
    objective = SSLObjective(model, config.mask_ratio)
    groups = param_groups(list(objective.named_parameters()), config.optim.lr, config.optim.weight_decay)
    weights = config.loss_weights.model_dump()
    extra = {"stage": "ssl", "recordings": len(records)}
    return train(config, objective, model, dataset, groups, weights, final_extra=extra)
