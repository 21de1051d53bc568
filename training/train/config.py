"""Run configurations: one TOML file per run, validated by pydantic (unknown keys are errors).

``acula train ssl --config configs/ssl.toml`` and ``acula train align --config configs/align.toml`` read
these; tests build them in Python. Every field has a CPU-sensible default; the shipped TOML files set the
values of the default model.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acula.training.nets.model import ModelConfig
from acula.training.teacher import TeacherSpec


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Base):
    root: Path = Field(Path("../shared/data"), description="Folder holding the dataset releases.")
    datasets: list[str] | None = Field(None, description="Dataset keys to use; None = every one found.")
    cache_dir: Path | None = Field(
        None, description="Decoded, resampled audio cache (.npy); None = $ACULA_CACHE or ~/.cache/acula."
    )
    batch_size: int = Field(32, ge=2, description="Per-device batch (before gradient accumulation).")
    num_workers: int = Field(0, ge=0, description="DataLoader workers; 0 on small CPU machines.")
    max_recordings: int | None = Field(
        None, ge=1, description="Use at most this many recordings (smoke tests)."
    )
    crops_per_recording: int = Field(1, ge=1, description="Random crops per recording per epoch.")
    cache_logmel: bool = Field(
        True,
        description="Train on cached log-mels when the front-end allows it (frozen, crop-independent "
        "normalisation): an epoch then costs only the network.",
    )


class OptimConfig(_Base):
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; None disables clipping.")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up (optimiser steps), then cosine decay.")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="Final lr as a fraction of lr.")


class CheckpointConfig(_Base):
    every_steps: int = Field(200, ge=1, description="Write last.pt every this many optimiser steps.")
    resume: bool = Field(True, description="Continue from out_dir/last.pt when it exists.")


class TrainConfig(_Base):
    """What every run shares."""

    name: str = Field("run", description="Run name; out_dir defaults to runs/<name>.")
    out_dir: Path | None = None
    seed: int = 0
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimiser steps (overrides epochs)."
    )
    accumulate: int = Field(1, ge=1, description="Gradient accumulation: micro-batches per optimiser step.")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA, off on CPU.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None keeps torch's default.")
    log_every: int = Field(5, ge=1, description="Optimiser steps between metric lines.")
    progress: bool = True
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @property
    def run_dir(self) -> Path:
        return self.out_dir if self.out_dir is not None else Path("runs") / self.name


class SSLLossWeights(_Base):
    masked_spectrogram: float = Field(1.0, ge=0)


class SSLConfig(TrainConfig):
    """Masked spectrogram modelling on training-side audio of every dataset."""

    name: str = "ssl"
    model: ModelConfig = Field(default_factory=ModelConfig)
    mask_ratio: float = Field(0.7, gt=0, lt=1, description="Fraction of patches hidden per clip.")
    init_checkpoint: Path | None = Field(
        None,
        description="Start from these weights: our checkpoint, or a foreign .pt/.safetensors state dict.",
    )
    init_key_prefixes: dict[str, str] = Field(
        default_factory=dict,
        description='Rename key prefixes of init_checkpoint, e.g. {"backbone." = "encoder."}.',
    )
    loss_weights: SSLLossWeights = Field(default_factory=SSLLossWeights)


class AlignLossWeights(_Base):
    """What alignment optimises: the contrastive term, plus terms that keep what the encoder already knew."""

    contrastive: float = Field(1.0, ge=0, description="InfoNCE or SigLIP (see `contrastive`).")
    cka: float = Field(0.0, ge=0, description="1 - linear CKA between audio and text joint features.")
    masked_spectrogram: float = Field(0.1, ge=0, description="Keeps fine acoustic detail while aligning.")
    distill_features: float = Field(
        0.0,
        ge=0,
        description="Stay near a frozen copy of the starting encoder's embedding (self-distillation).",
    )
    distill_logits: float = Field(
        0.0, ge=0, description="Keep the starting encoder's AudioSet predictions (pretrained MobileNet only)."
    )


class EvalConfig(_Base):
    recall_k: int = Field(
        5, ge=1, description="Audio -> report recall@k on the test side, logged at the end."
    )
    max_train_recordings: int = Field(
        1000, ge=10, description="Training pairs for the ridge text-map baseline."
    )
    enabled: bool = True


class AlignConfig(TrainConfig):
    """Align an SSL checkpoint to a frozen teacher's embeddings of the training-side reports."""

    name: str = "align"
    init_checkpoint: Path | None = Field(
        None, description="SSL checkpoint to start from (runs/ssl/final.pt)."
    )
    model: ModelConfig | None = Field(None, description="Only when there is no init_checkpoint: random init.")
    reports: Path = Field(Path("reports/reports.jsonl"), description="Reports JSONL (training.reports).")
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    teacher_cache_dir: Path | None = Field(None, description="None = <cache_dir>/teacher.")
    contrastive: Literal["infonce", "siglip"] = "infonce"
    mask_ratio: float = Field(0.7, gt=0, lt=1)
    masked_batch_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of each batch that also gets the masked pass (costs a 2nd forward).",
    )
    loss_weights: AlignLossWeights = Field(default_factory=AlignLossWeights)
    encoder_lr_scale: float = Field(
        0.3, ge=0, le=1, description="Encoder lr = optim.lr * this; heads learn at optim.lr (0: frozen)."
    )
    freeze_batchnorm: bool = Field(
        False, description="Keep the encoder's BatchNorm statistics as they were (eval mode) while aligning."
    )
    embedding_includes_joint: bool = Field(
        False,
        description="The aligned model's embedding (what the probes read) is [encoder features ‖ joint] "
        "rather than the features alone; see ModelConfig.embedding_includes_joint.",
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)


C = TypeVar("C", bound=TrainConfig)


def load_config(path: Path, cls: type[C], overrides: dict[str, object] | None = None) -> C:
    """Read a TOML file into ``cls``; ``overrides`` (dotted keys) replace values, e.g. {"epochs": 1}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from exc
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path} does not match the {cls.__name__} schema:\n{exc}") from exc
