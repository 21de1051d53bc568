"""Losses: InfoNCE, SigLIP, CKA, masking, and the same-text target rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from acula.training.losses import (
    ContrastiveLoss,
    cka_loss,
    linear_cka,
    masked_spectrogram_loss,
    random_patch_mask,
    same_text_targets,
    text_ids_for,
)

torch.set_num_threads(2)


def _unit(b: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_identical_pairs_beat_shuffled(kind: str) -> None:
    loss = ContrastiveLoss(kind)
    a = _unit(32, 16, 0)
    ids = torch.arange(32)
    matched = loss(a, a, ids)
    shuffled = loss(a, a[torch.randperm(32, generator=torch.Generator().manual_seed(1))], ids)
    assert matched < shuffled


def test_temperature_init_and_clamp() -> None:
    loss = ContrastiveLoss()
    assert math.isclose(loss.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    with torch.no_grad():
        loss.logit_scale.fill_(10.0)
    assert math.isclose(loss.scale().item(), 100.0, rel_tol=1e-5)
    a = _unit(4, 8, 0)
    out = loss(a, a, torch.arange(4))
    out.backward()
    assert loss.logit_scale.grad is not None


def test_same_text_rows_are_not_negatives() -> None:
    ids = text_ids_for(["normal", "wheeze", "normal", "crackle"])
    assert ids.tolist() == [0, 1, 0, 2]
    targets = same_text_targets(ids)
    assert torch.allclose(targets[0], torch.tensor([0.5, 0.0, 0.5, 0.0]))
    assert torch.allclose(targets.sum(1), torch.ones(4))
    # Audio 0 landing on the text of row 2 (same text) costs the same as landing on its own.
    text = _unit(4, 8, 3)
    text[2] = text[0]
    loss = ContrastiveLoss()
    swapped = text.clone()
    swapped[[0, 2]] = swapped[[2, 0]]
    assert torch.isclose(loss(text, text, ids), loss(text, swapped, ids))
    # SigLIP scores every pair on its own: with all-distinct ids the duplicate is a false negative whose
    # logit equals the positive's, so the loss cannot fall; with text-identity labels it can.
    siglip = ContrastiveLoss("siglip")
    with torch.no_grad():
        siglip.logit_scale.fill_(math.log(50.0))
        siglip.logit_bias.fill_(-25.0)
    ortho = torch.eye(8)[:4]
    ortho[2] = ortho[0]
    assert siglip(ortho, ortho, ids) < 0.1 < siglip(ortho, ortho, torch.arange(4))


def test_cka_identical_scaled_and_unrelated() -> None:
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(0))
    assert torch.isclose(linear_cka(x, x), torch.tensor(1.0), atol=1e-5)
    assert torch.isclose(linear_cka(x, 7.5 * x), torch.tensor(1.0), atol=1e-5)
    assert torch.isclose(linear_cka(3.0 * x, x + 2.0), torch.tensor(1.0), atol=1e-5)  # centred
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(1)))
    assert torch.isclose(linear_cka(x, x @ q), torch.tensor(1.0), atol=1e-4)
    y = torch.randn(64, 12, generator=torch.Generator().manual_seed(2))
    assert linear_cka(x, y) < 0.5
    assert torch.isclose(cka_loss(x, x), torch.tensor(0.0), atol=1e-5)


@pytest.mark.parametrize("ratio", [0.3, 0.7, 0.9])
def test_mask_covers_the_asked_fraction(ratio: float) -> None:
    mask = random_patch_mask(16, 4, 25, ratio, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (16, 4, 25) and mask.dtype == torch.bool
    per_row = mask.flatten(1).sum(1)
    assert (per_row == round(ratio * 100)).all()
    assert not torch.equal(mask[0], mask[1])  # different patches per sample


def test_mask_rejects_bad_ratio() -> None:
    with pytest.raises(ValueError, match="mask ratio"):
        random_patch_mask(1, 2, 2, 1.0)


def test_masked_loss_reads_only_hidden_patches() -> None:
    target = torch.zeros(2, 6, 4)
    pred = torch.zeros(2, 6, 4)
    mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    mask[:, 0, 0] = True
    pred[:, 1:] = 5.0  # errors on visible patches only
    assert masked_spectrogram_loss(pred, target, mask) == 0
    pred[:, 0] = 1.0
    assert torch.isclose(masked_spectrogram_loss(pred, target, mask), torch.tensor(1.0))
