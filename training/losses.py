"""Training losses. Each returns a scalar; the trainer collects them as NAMED parts and sums them with
the weights of its config (``loss_weights``), so adding or reweighting a part is one line and every part is
logged.

Positives that share a report text
----------------------------------
Template reports repeat: two normal heart recordings of one dataset may get the very same text. In a plain
InfoNCE batch they would be each other's negatives, and the model would be pushed to separate recordings
that the teacher cannot tell apart. We build the targets from text identity instead: every batch row
carries a ``text_id`` (equal ids <=> identical report text), and each row's target distribution spreads its
mass uniformly over all columns with the same id (for SigLIP: every such pair is labelled positive). With
unique texts this reduces to the usual diagonal target.

What this changes, precisely: for SigLIP, a duplicate labelled negative has the same logit as the positive,
so the loss has a floor that the model fights by distorting the space; shared labels remove it. For
InfoNCE with exactly identical text embeddings the value and gradient equal the plain loss (identical
columns share the softmax mass either way), and the targets make that explicit and keep it true when the
two columns differ slightly (dropout in the text head) or when a caller groups rows by another key (pass
any integer ids, e.g. one per label set). Texts are de-duplicated before the teacher runs (the cache).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def random_patch_mask(
    batch: int,
    freq_patches: int,
    time_patches: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(B, Fp, Tp)`` bool, True = hidden; exactly ``round(ratio * Fp * Tp)`` patches per row (at least one,
    and at least one visible), chosen uniformly at random."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    n = freq_patches * time_patches
    if n < 2:
        raise ValueError(f"need at least 2 patches to mask, got a {freq_patches}x{time_patches} grid")
    k = min(max(1, round(ratio * n)), n - 1)
    noise = torch.rand(batch, n, generator=generator, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # rank of each patch's noise: a random permutation
    return (ranks < k).reshape(batch, freq_patches, time_patches)


def masked_spectrogram_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the pixels of hidden patches only; pred/target ``(B, N, P)``, ``mask`` ``(B, Fp, Tp)``."""
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # (B, N)
    weight = mask.flatten(1).to(per_patch.dtype)  # (B, Fp, Tp) -> (B, N)
    return (per_patch * weight).sum() / weight.sum().clamp(min=1.0)


def same_text_targets(text_ids: torch.Tensor) -> torch.Tensor:
    """``(B,)`` ids -> ``(B, B)`` row-stochastic targets: uniform over columns with the same text."""
    same = (text_ids[:, None] == text_ids[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Linear centred kernel alignment between ``(B, Dx)`` and ``(B, Dy)`` batch features, in [0, 1].

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``: invariant to isotropic scaling and orthogonal
    transforms of either side, which is why AcuLa uses it to compare audio and text geometries.
    """
    x = x.float() - x.float().mean(dim=0, keepdim=True)
    y = y.float() - y.float().mean(dim=0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    return cross / ((x.T @ x).norm() * (y.T @ y).norm() + eps)


def cka_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 1.0 - linear_cka(x, y)


def feature_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared error to a frozen teacher's features ``(B, D)``, divided by the teacher's variance across the
    batch: scale-free (1.0 is as far off as predicting the batch mean), so its weight means the same for a
    384-d and a 1,536-d embedding."""
    teacher = teacher.float()
    spread = teacher.var(dim=0, unbiased=False).mean().clamp(min=1e-6)
    return F.mse_loss(student.float(), teacher) / spread


def logit_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the student's multi-label logits against the teacher's sigmoid outputs, the
    soft targets AudioSet taggers are distilled with (one independent probability per class)."""
    return F.binary_cross_entropy_with_logits(student.float(), torch.sigmoid(teacher.float()))


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE (default) or SigLIP between unit-length audio and text joint embeddings.

    The temperature is learnable: ``logit_scale`` starts at log(1/0.07) (InfoNCE, as CLIP) or log(10) with
    a bias of -10 (SigLIP, as its paper), and the scale is clamped at 100 so that it cannot run away.
    """

    def __init__(self, kind: str = "infonce", max_logit_scale: float = 100.0) -> None:
        super().__init__()
        if kind not in ("infonce", "siglip"):
            raise ValueError(f"contrastive loss must be 'infonce' or 'siglip', got {kind!r}")
        self.kind = kind
        self.max_log_scale = math.log(max_logit_scale)
        init = math.log(1 / 0.07) if kind == "infonce" else math.log(10.0)
        self.logit_scale = nn.Parameter(torch.tensor(init))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0 if kind == "siglip" else 0.0))
        self.logit_bias.requires_grad_(kind == "siglip")

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    def forward(self, audio: torch.Tensor, text: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        logits = self.scale() * audio.float() @ text.float().T  # (B, B): rows audio, columns text
        if self.kind == "siglip":
            labels = 2.0 * (text_ids[:, None] == text_ids[None, :]).float() - 1.0
            return -F.logsigmoid(labels * (logits + self.logit_bias)).sum() / len(audio)
        targets = same_text_targets(text_ids)  # symmetric, so the same targets serve both directions
        audio_to_text = F.cross_entropy(logits, targets)
        text_to_audio = F.cross_entropy(logits.T, targets)
        return 0.5 * (audio_to_text + text_to_audio)


def text_ids_for(texts: list[str]) -> torch.Tensor:
    """Batch texts -> ``(B,)`` ids, equal exactly when the texts are identical."""
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(t, len(index)) for t in texts], dtype=torch.long)
