"""ViT patch encoder of the MAE/AudioMAE kind, for users with a GPU.

Non-overlapping ``patch`` x ``patch`` log-mel patches become tokens; position is a learned frequency
embedding plus a learned time embedding sliced to the clip length (so the length stays dynamic in ONNX).
Masked pretraining follows SimMIM: hidden patches are replaced by a learned mask token and a light decoder
reconstructs their pixels, so the encoder sees the same token grid in pretraining and in use.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from acula.training.nets.heads import FrequencyPreservingPool


class ViTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patch: int = Field(16, ge=2, description="Square patch size in log-mel bins/frames.")
    dim: int = Field(192, ge=16, description="Token width.")
    depth: int = Field(6, ge=1, description="Transformer blocks.")
    heads: int = Field(3, ge=1, description="Attention heads; must divide dim.")
    mlp_ratio: float = Field(4.0, gt=0)
    max_time_patches: int = Field(128, ge=1, description="Longest clip in patches (128 x 16 frames = 20 s).")
    dropout: float = Field(0.0, ge=0, lt=1)


class Block(nn.Module):
    """Pre-norm transformer block: ``(B, N, C) -> (B, N, C)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"vit.dim={dim} must be divisible by vit.heads={heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, C / heads)
        attn = nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nn.Module):
    """``(B, 1, F, T)`` log-mel -> token grid ``(B, C, F / p, T / p)`` -> embedding ``(B, D)``."""

    def __init__(self, config: ViTConfig, n_mels: int, embedding_dim: int) -> None:
        super().__init__()
        if n_mels % config.patch:
            raise ValueError(f"n_mels={n_mels} must be divisible by vit.patch={config.patch}")
        self.config = config
        self.patch = (config.patch, config.patch)
        self.bands = n_mels // config.patch
        self.grid_channels = config.dim
        self.embed = nn.Conv2d(1, config.dim, config.patch, stride=config.patch)
        self.freq_pos = nn.Parameter(torch.randn(1, config.dim, self.bands, 1) * 0.02)
        self.time_pos = nn.Parameter(torch.randn(1, config.dim, 1, config.max_time_patches) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, config.dim, 1, 1))
        blocks = [
            Block(config.dim, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)
        ]
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(config.dim)
        self.pool = FrequencyPreservingPool(config.dim, self.bands, embedding_dim, config.dropout)

    def grid(self, spec: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.embed(spec)  # (B, 1, F, T) -> (B, C, Fp, Tp)
        if patch_mask is not None:
            tokens = torch.where(patch_mask.unsqueeze(1), self.mask_token.to(tokens.dtype), tokens)
        tp = tokens.shape[3]
        tokens = tokens + self.freq_pos + self.time_pos[:, :, :, :tp]
        b, c, fp, _ = tokens.shape
        seq = tokens.flatten(2).transpose(1, 2)  # (B, C, Fp, Tp) -> (B, Fp * Tp, C)
        seq = self.norm(self.blocks(seq))
        return seq.transpose(1, 2).reshape(b, c, fp, tp)  # (B, Fp * Tp, C) -> (B, C, Fp, Tp)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.pool(self.grid(spec))
