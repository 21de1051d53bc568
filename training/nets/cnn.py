"""Compact CNN encoder that trains on CPU.

Four conv stages (conv -> BatchNorm -> GELU, then pooling) turn the log-mel into a grid of cells; time is
halved at every stage, frequency only at the stages listed in ``freq_pool``, so the grid keeps several
frequency bands for :class:`~training.nets.heads.FrequencyPreservingPool`. One grid cell covers exactly one
``patch`` of the input spectrogram, which is what masked spectrogram modelling reconstructs.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from acula.training.nets.heads import FrequencyPreservingPool


class CNNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[int] = Field([16, 32, 64, 128], min_length=1, description="Output channels per stage.")
    freq_pool: list[bool] = Field(
        [True, True, True, False], description="Per stage: halve frequency too (time is always halved)."
    )
    convs_per_stage: int = Field(1, ge=1, le=3, description="3x3 conv layers per stage.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout before the pooled projection.")


def _stage(cin: int, cout: int, convs: int, pool: tuple[int, int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
        layers.append(nn.GELU())
    layers.append(nn.MaxPool2d(pool))
    return nn.Sequential(*layers)


class CNNEncoder(nn.Module):
    """``(B, 1, F, T)`` log-mel -> grid ``(B, C, F / pf, T / pt)`` -> embedding ``(B, D)``."""

    def __init__(self, config: CNNConfig, n_mels: int, embedding_dim: int) -> None:
        super().__init__()
        if len(config.freq_pool) != len(config.channels):
            raise ValueError("cnn.freq_pool needs one entry per entry of cnn.channels")
        self.config = config
        pf = 2 ** sum(config.freq_pool)
        pt = 2 ** len(config.channels)
        if n_mels % pf:
            raise ValueError(f"n_mels={n_mels} must be divisible by the frequency stride {pf}")
        self.patch = (pf, pt)
        self.bands = n_mels // pf
        self.grid_channels = config.channels[-1]
        stages, cin = [], 1
        for cout, fpool in zip(config.channels, config.freq_pool, strict=True):
            stages.append(_stage(cin, cout, config.convs_per_stage, (2 if fpool else 1, 2)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        # Replaces masked patches of the input during SSL (a learnable value, not zero: zero is a real level).
        self.mask_value = nn.Parameter(torch.zeros(1))
        self.pool = FrequencyPreservingPool(self.grid_channels, self.bands, embedding_dim, config.dropout)

    def grid(self, spec: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 1, F, T)`` -> ``(B, C, Fp, Tp)``; ``patch_mask`` (B, Fp, Tp) bool marks hidden patches."""
        if patch_mask is not None:
            pf, pt = self.patch
            pixel_mask = patch_mask.repeat_interleave(pf, 1).repeat_interleave(pt, 2)  # (B, Fp*pf, Tp*pt)
            full = torch.zeros(
                spec.shape[0], spec.shape[2], spec.shape[3], dtype=torch.bool, device=spec.device
            )
            full[:, : pixel_mask.shape[1], : pixel_mask.shape[2]] = pixel_mask
            spec = torch.where(full.unsqueeze(1), self.mask_value.to(spec.dtype), spec)
        return self.stages(spec)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.pool(self.grid(spec))  # (B, 1, F, T) -> (B, C, Fp, Tp) -> (B, D)
