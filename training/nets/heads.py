"""Small heads shared by the encoders: frequency-preserving pooling, joint projections, the SSL decoder."""

from __future__ import annotations

import torch
from torch import nn


class FrequencyPreservingPool(nn.Module):
    """Pool time away but keep one feature vector per frequency band, then project.

    Crackles and wheezes live in particular bands; averaging over frequency (global pooling) mixes them with
    the heart and noise bands. Mean and max over time per band keep both the level and the transient peaks.
    ``(B, C, F, T) -> (B, D)``.
    """

    def __init__(self, channels: int, bands: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bands = bands
        self.norm = nn.LayerNorm(channels * bands * 2)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(channels * bands * 2, out_dim)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        if grid.shape[2] != self.bands:
            raise ValueError(f"expected {self.bands} frequency bands, got grid of shape {tuple(grid.shape)}")
        pooled = torch.cat([grid.mean(dim=3), grid.amax(dim=3)], dim=2)  # (B, C, F, T) -> (B, C, 2F)
        return self.proj(self.drop(self.norm(pooled.flatten(1))))  # (B, C * 2F) -> (B, D)


class JointProjection(nn.Module):
    """Map an embedding (audio ``D`` or teacher ``H``) into the joint space ``J``, L2-normalised.

    Two layers with a residual linear path, as in CLAP's projection: the linear path keeps the map easy
    to learn from few pairs, the non-linear one lets it bend.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(out_dim, out_dim))
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        h = self.norm(h + self.mlp(h))
        return nn.functional.normalize(h, dim=-1)  # (B, J), unit length


class PatchDecoder(nn.Module):
    """Light decoder for masked spectrogram modelling: one grid cell -> the pixels of its patch.

    ``(B, C, Fp, Tp) -> (B, Fp * Tp, pf * pt)``. A 3x3 convolution lets each cell see its neighbours
    (context, since most of them are masked too), then a 1x1 projects to pixels.
    """

    def __init__(self, channels: int, patch: tuple[int, int], hidden: int = 128) -> None:
        super().__init__()
        self.patch = patch
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, patch[0] * patch[1], 1),
        )

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        pixels = self.net(grid)  # (B, pf * pt, Fp, Tp)
        return pixels.flatten(2).transpose(1, 2)  # (B, Fp * Tp, pf * pt)
