"""AcuLa alignment: pull each recording's audio towards the frozen teacher's embedding of its report.

Starts from the SSL checkpoint, adds a text projection head sized from the teacher's hidden size, and trains
with the named loss parts of ``training.losses`` (contrastive + optional 1 - CKA + the masked-spectrogram
loss that keeps acoustic detail). Only training-side recordings and their training-side reports are used.
The teacher runs once per distinct text, before training (``TeacherCache``); training reads a table.
At the end, audio -> report recall@k on the test side is logged for the starting checkpoint and the aligned
one (``retrieval.json``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from acula.training.data.records import Recording
from acula.training.losses import (
    ContrastiveLoss,
    cka_loss,
    feature_distillation_loss,
    logit_distillation_loss,
    masked_spectrogram_loss,
    random_patch_mask,
)
from acula.training.nets.factory import build_model, load_checkpoint, read_checkpoint
from acula.training.nets.model import AculaAudioModel
from acula.training.teacher import TeacherCache, load_teacher
from acula.training.train.audio_dataset import AudioCache, LogMelCache, default_cache_dir
from acula.training.train.config import AlignConfig
from acula.training.train.loop import param_groups, train
from acula.training.train.pairs import PairDataset, build_pairs, read_reports
from acula.training.train.ssl import float32_logmel, subset


class AlignObjective(nn.Module):
    """``(audio, text index (B,))`` -> named loss parts; ``audio`` is waveforms ``(B, S)`` or, from the
    log-mel cache, log-mels ``(B, 1, F, T)``.

    ``text_table`` ``(U, H)`` holds the cached teacher embedding of every distinct training text; the text
    index doubles as the text identity for the contrastive targets. The self-distillation parts compare the
    encoder with a frozen copy of itself as it was when alignment started (for a pretrained encoder: what
    AudioSet taught it).
    """

    text_table: torch.Tensor

    def __init__(
        self,
        model: AculaAudioModel,
        text_table: torch.Tensor,
        contrastive: str,
        mask_ratio: float,
        weights: dict[str, float],
        masked_batch_fraction: float = 1.0,
        freeze_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.contrastive = ContrastiveLoss(contrastive)
        self.register_buffer("text_table", text_table, persistent=False)
        self.mask_ratio = mask_ratio
        self.masked_batch_fraction = masked_batch_fraction
        self.freeze_batchnorm = freeze_batchnorm
        self.active = {name for name, w in weights.items() if w > 0}
        if "distill_logits" in self.active and not hasattr(model.encoder, "classify"):
            raise ValueError("distill_logits needs an encoder with a classifier (the pretrained MobileNet)")
        self.frozen_encoder: nn.Module | None = None
        if self.active & {"distill_features", "distill_logits"}:
            self.frozen_encoder = copy.deepcopy(model.encoder).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> AlignObjective:
        super().train(mode)
        if self.frozen_encoder is not None:
            self.frozen_encoder.eval()
        if self.freeze_batchnorm:
            for module in self.model.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, audio: torch.Tensor, text_index: torch.Tensor) -> dict[str, torch.Tensor]:
        model, encoder = self.model, self.model.encoder
        spec = audio if audio.dim() == 4 else float32_logmel(model, audio)  # (B, 1, F, T)
        logits = None
        if "distill_logits" in self.active:
            fmap = encoder.feature_map(spec)  # type: ignore[operator]
            embedding, logits = encoder.pool(fmap), encoder.classify(fmap)  # type: ignore[operator]
        else:
            embedding = encoder(spec)  # (B, 1, F, T) -> (B, D)
        audio_joint = model.audio_head(embedding)  # (B, D) -> (B, J)
        text = model.encode_text(self.text_table[text_index])  # (B, H) -> (B, J)
        parts: dict[str, torch.Tensor] = {}
        if "contrastive" in self.active:
            parts["contrastive"] = self.contrastive(audio_joint, text, text_index)
        if "cka" in self.active:
            parts["cka"] = cka_loss(audio_joint, text)
        if self.frozen_encoder is not None:
            with torch.no_grad():
                frozen_map = self.frozen_encoder.feature_map(spec)  # type: ignore[operator]
            if "distill_features" in self.active:
                target = self.frozen_encoder.pool(frozen_map)  # type: ignore[operator]
                parts["distill_features"] = feature_distillation_loss(embedding, target)
            if logits is not None:
                target = self.frozen_encoder.classify(frozen_map)  # type: ignore[operator]
                parts["distill_logits"] = logit_distillation_loss(logits, target)
        if "masked_spectrogram" in self.active:
            # The masked pass is a second forward: on CPU it runs on part of the batch only.
            part = spec[: max(1, round(len(spec) * self.masked_batch_fraction))]
            fp, tp = model.grid_shape(part.shape[-1])
            mask = random_patch_mask(len(part), fp, tp, self.mask_ratio, device=spec.device)
            pred, target = model.reconstruct(part, mask)
            parts["masked_spectrogram"] = masked_spectrogram_loss(pred, target, mask)
        return parts

    def extra_metrics(self) -> dict[str, float]:
        return {"logit_scale": float(self.contrastive.scale().detach())}


def starting_model(config: AlignConfig, text_dim: int) -> AculaAudioModel:
    """The starting point with a text head for a teacher of hidden size ``text_dim``: a checkpoint (SSL, or
    the pretrained encoder saved as one), or ``config.model`` (random, or the pretrained weights it names)."""
    if config.init_checkpoint is not None:
        base = load_checkpoint(config.init_checkpoint)
    elif config.model is not None:
        base = build_model(config.model)
    else:
        raise ValueError("align needs init_checkpoint (the SSL checkpoint) or, for a random start, model")
    update = {"text_dim": text_dim, "embedding_includes_joint": config.embedding_includes_joint}
    model = build_model(base.config.model_copy(update=update), load_weights=False)
    result = model.load_state_dict(base.state_dict(), strict=False)
    unexpected = list(result.unexpected_keys)
    if base.config.text_dim not in (None, text_dim):  # a previous teacher's head: drop it, train a new one
        unexpected = [k for k in unexpected if not k.startswith("text_head.")]
    missing = [k for k in result.missing_keys if not k.startswith("text_head.")]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")
    return model


def _param_groups(objective: AlignObjective, config: AlignConfig) -> list[dict]:
    """New parts (joint heads, temperature, SSL decoder) learn at ``optim.lr``, the encoder it starts from
    at ``optim.lr * encoder_lr_scale``, or not at all when that is 0."""
    encoder_prefixes = ("model.encoder.", "model.frontend.")
    named = [(n, p) for n, p in objective.named_parameters() if not n.startswith("frozen_encoder.")]
    heads = [(n, p) for n, p in named if not n.startswith(encoder_prefixes)]
    encoder = [(n, p) for n, p in named if n.startswith(encoder_prefixes)]
    lr, wd = config.optim.lr, config.optim.weight_decay
    if config.encoder_lr_scale == 0:
        for _, parameter in encoder:
            parameter.requires_grad_(False)
        return param_groups(heads, lr, wd)
    return param_groups(heads, lr, wd) + param_groups(encoder, lr * config.encoder_lr_scale, wd)


def run_align(
    config: AlignConfig, records: list[Recording] | None = None, reports: list[Any] | None = None
) -> Path:
    """Align; returns ``<run_dir>/final.pt``. ``records``/``reports`` override loading from the config."""
    all_records = records
    if all_records is None:
        from acula.training.data import load_records

        all_records = load_records(Path(config.data.root), config.data.datasets)
    if reports is None:
        reports = read_reports(config.reports)
    train_pairs = build_pairs(all_records, reports, "train")
    train_pairs = train_pairs.keep(subset(train_pairs.records, config.data.max_recordings, config.seed))
    if not train_pairs.records:
        raise ValueError(
            f"no training-side recording has a training-side report in {config.reports}: "
            "check that the reports were written for these datasets"
        )
    teacher = load_teacher(config.teacher)
    cache_root = Path(config.data.cache_dir) if config.data.cache_dir else None
    teacher_dir = config.teacher_cache_dir or (cache_root or default_cache_dir()) / "teacher"
    teacher_cache = TeacherCache(teacher, teacher_dir)
    table = torch.from_numpy(teacher_cache.encode(train_pairs.texts))  # (U, H), the only teacher run

    torch.manual_seed(config.seed)
    model = starting_model(config, teacher.hidden_size)
    audio_cache = AudioCache(cache_root, model.sample_rate)
    train_pairs = train_pairs.keep(audio_cache.prepare(train_pairs.records, progress=config.progress))
    source: AudioCache | LogMelCache = audio_cache
    if config.data.cache_logmel and model.config.frontend.normalise != "clip":
        source = LogMelCache(audio_cache, model.frontend)
        train_pairs = train_pairs.keep(source.prepare(train_pairs.records, progress=config.progress))
    window = model.config.audio.window_samples  # a crop is one window of the model's contract
    dataset = PairDataset(train_pairs, source, window, config.data.crops_per_recording, config.seed)
    weights = config.loss_weights.model_dump()
    objective = AlignObjective(
        model,
        table,
        config.contrastive,
        config.mask_ratio,
        weights,
        config.masked_batch_fraction,
        config.freeze_batchnorm,
    )
    groups = _param_groups(objective, config)
    extra = {
        "stage": "align",
        "teacher": teacher.identity,
        "teacher_path": str(config.teacher.path),
        "recordings": len(train_pairs.records),
        "texts": len(train_pairs.texts),
    }
    final = train(config, objective, model, dataset, groups, weights, final_extra=extra)
    if config.eval.enabled:
        evaluate(config, final, all_records, reports, teacher_cache, audio_cache)
    return final


def evaluate(
    config: AlignConfig,
    final: Path,
    records: list[Recording],
    reports: list[Any],
    teacher_cache: TeacherCache,
    audio_cache: AudioCache,
) -> dict[str, dict[str, float]] | None:
    """Test-side audio -> report recall@k, starting checkpoint vs aligned; writes ``retrieval.json``."""
    from acula.training.train.retrieval import retrieval_report

    test_pairs = build_pairs(records, reports, "test")
    test_pairs = test_pairs.keep(audio_cache.prepare(test_pairs.records, progress=config.progress))
    if not test_pairs.records:
        print("no test-side recording has a report: retrieval not measured")
        return None
    train_pairs = build_pairs(records, reports, "train")
    train_pairs = train_pairs.keep(subset(train_pairs.records, config.eval.max_train_recordings, config.seed))
    aligned = load_checkpoint(final)
    if config.init_checkpoint is not None:
        before = load_checkpoint(config.init_checkpoint)  # named by the stage that wrote it
        before_name = str(read_checkpoint(config.init_checkpoint).get("stage", "start"))
    else:  # the same start alignment had: the pretrained weights the config names, or the seeded random init
        torch.manual_seed(config.seed)
        start = {"text_dim": None, "embedding_includes_joint": False}
        before = build_model(aligned.config.model_copy(update=start)).eval()
        pretrained = aligned.config.encoder == "mobilenet" and aligned.config.mobilenet.pretrained is not None
        before_name = "pretrained" if pretrained else "random_init"
    results = retrieval_report(
        {before_name: before, "aligned": aligned},
        train_pairs,
        test_pairs,
        teacher_cache.encode(train_pairs.texts),
        teacher_cache.encode(test_pairs.texts),
        audio_cache,
        config.eval.recall_k,
    )
    out = final.parent / "retrieval.json"
    out.write_text(json.dumps({"k": config.eval.recall_k, "results": results}, indent=2) + "\n")
    k = config.eval.recall_k
    for name, row in results.items():
        joint = f", joint {row['joint_all']:.3f}" if "joint_all" in row else ""
        ridge, chance = row["ridge_all"], row["chance_all"]
        print(f"recall@{k} test side [{name}]: ridge {ridge:.3f}{joint} (chance {chance:.3f})")
    return results
