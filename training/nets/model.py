"""``AculaAudioModel``: log-mel front-end + encoder + joint projection, with the SSL decoder alongside.

``forward`` is what the ONNX bundle runs: waveform windows in, ``(embedding, joint)`` out. The masked
spectrogram decoder and the text projection live in the same module (and checkpoint) because alignment keeps
training them, but they are not on the ``forward`` path, so export drops them.

The encoder is one of three families: a small CNN and a ViT trained here, or EfficientAT's AudioSet-pretrained
MobileNet (``mobilenet``), whose pooled features are the embedding itself (no projection in between), so a
frozen pretrained model embeds exactly as EfficientAT does.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from acula.service.bundle import AudioContract
from acula.training.nets.cnn import CNNConfig, CNNEncoder
from acula.training.nets.efficientat import (
    MobileNetConfig,
    MobileNetEncoder,
    efficientat_frontend,
    mobilenet_embedding_dim,
)
from acula.training.nets.frontend import FrontendConfig, LogMelFrontend
from acula.training.nets.heads import JointProjection, PatchDecoder
from acula.training.nets.vit import ViTConfig, ViTEncoder


class ModelConfig(BaseModel):
    """Everything needed to rebuild the network; stored in every checkpoint as ``config``."""

    model_config = ConfigDict(extra="forbid")

    encoder: Literal["cnn", "vit", "mobilenet"] = Field(
        "cnn",
        description="cnn: trains on CPU; vit: MAE-style, for GPUs; mobilenet: EfficientAT's "
        "AudioSet-pretrained MobileNetV3 (32 kHz front-end).",
    )
    frontend: FrontendConfig = Field(
        default_factory=FrontendConfig,
        description="Waveform -> log-mel; for mobilenet, when not given, the front-end its weights were "
        "trained with (efficientat_frontend).",
    )
    cnn: CNNConfig = Field(default_factory=CNNConfig, description="Used when encoder is cnn.")
    vit: ViTConfig = Field(default_factory=ViTConfig, description="Used when encoder is vit.")
    mobilenet: MobileNetConfig = Field(
        default_factory=MobileNetConfig, description="Used when encoder is mobilenet."
    )
    embedding_dim: int = Field(
        256,
        ge=8,
        description="Window embedding D (what the probes read); for mobilenet it follows the pooling "
        "(384 mean, 1,536 freq) and is filled in when not given.",
    )
    joint_dim: int = Field(256, ge=8, description="Joint audio-text space J.")
    embedding_includes_joint: bool = Field(
        False,
        description="The exported embedding is [encoder features D ‖ joint J] rather than the features "
        "alone, so that the probes, the out-of-distribution reference and the sound-type gate read what "
        "alignment learnt too (a pretrained backbone that alignment barely moves keeps its features intact "
        "beside it). Set by alignment (align.embedding_includes_joint).",
    )
    text_dim: int | None = Field(
        None, description="Teacher hidden size H; set by alignment, None for an SSL-only model."
    )
    decoder_hidden: int = Field(128, ge=8, description="Width of the light SSL decoder.")
    projection_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout inside the joint projections.")
    audio: AudioContract = Field(
        default_factory=AudioContract,
        description="How a recording is cut into windows and pooled (window, hop, pooling, minimum length): "
        "the one windowing contract. Training crops windows of this length, and export copies it into the "
        "bundle's manifest, which the service and the CLI obey; its sample rate is the front-end's.",
    )

    @model_validator(mode="after")
    def _mobilenet_contract(self) -> ModelConfig:
        """The pretrained MobileNet fixes the front-end and the embedding width; fill them in or refuse."""
        if self.encoder != "mobilenet":
            return self
        if "frontend" not in self.model_fields_set:
            self.frontend = efficientat_frontend()
        elif self.mobilenet.pretrained is not None and self.frontend != efficientat_frontend():
            raise ValueError(
                "mobilenet.pretrained needs the front-end its weights were trained with "
                "(efficientat_frontend()); leave frontend unset to get it"
            )
        width = mobilenet_embedding_dim(self.mobilenet, self.frontend.n_mels)
        if "embedding_dim" not in self.model_fields_set:
            self.embedding_dim = width
        elif self.embedding_dim != width:
            raise ValueError(
                f"embedding_dim={self.embedding_dim}, but the mobilenet embedding with pooling "
                f"{self.mobilenet.pooling!r} is {width}-d (it is not projected); leave embedding_dim unset"
            )
        return self

    @model_validator(mode="after")
    def _complete_audio_contract(self) -> ModelConfig:
        """The contract's rate is the front-end's and its hop, unless given, the window (no overlap)."""
        given = self.audio.model_fields_set
        if "sample_rate" in given and self.audio.sample_rate != self.frontend.sample_rate:
            raise ValueError(
                f"audio.sample_rate={self.audio.sample_rate} but the front-end runs at "
                f"{self.frontend.sample_rate} Hz; leave audio.sample_rate unset"
            )
        update: dict[str, float | int] = {"sample_rate": self.frontend.sample_rate}
        if "hop_seconds" not in given:
            update["hop_seconds"] = self.audio.window_seconds
        self.audio = AudioContract.model_validate(self.audio.model_dump() | update)
        return self

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate


def patchify(spec: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """``(B, 1, F, T)`` -> ``(B, Fp * Tp, pf * pt)``, dropping the frames past the last whole patch."""
    pf, pt = patch
    b, _, f, t = spec.shape
    fp, tp = f // pf, t // pt
    x = spec[:, 0, : fp * pf, : tp * pt].reshape(b, fp, pf, tp, pt)
    return x.permute(0, 1, 3, 2, 4).reshape(b, fp * tp, pf * pt)


class AculaAudioModel(nn.Module):
    """Waveform ``(B, S)`` at ``sample_rate`` -> embedding ``(B, D)``, joint ``(B, J)`` (unit length)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = LogMelFrontend(config.frontend)
        n_mels = config.frontend.n_mels
        self.encoder: CNNEncoder | ViTEncoder | MobileNetEncoder
        if config.encoder == "cnn":
            self.encoder = CNNEncoder(config.cnn, n_mels, config.embedding_dim)
        elif config.encoder == "vit":
            self.encoder = ViTEncoder(config.vit, n_mels, config.embedding_dim)
        else:  # pretrained weights are loaded by factory.build_model, never here
            self.encoder = MobileNetEncoder(config.mobilenet, n_mels)
        self.audio_head = JointProjection(config.embedding_dim, config.joint_dim, config.projection_dropout)
        self.decoder = PatchDecoder(self.encoder.grid_channels, self.encoder.patch, config.decoder_hidden)
        self.text_head: JointProjection | None = None
        if config.text_dim is not None:
            self.text_head = JointProjection(config.text_dim, config.joint_dim, config.projection_dropout)

    @property
    def embedding_dim(self) -> int:
        """Width of the exported ``embedding`` output (features, plus the joint when configured)."""
        joint = self.config.joint_dim if self.config.embedding_includes_joint else 0
        return self.config.embedding_dim + joint

    @property
    def joint_dim(self) -> int:
        return self.config.joint_dim

    @property
    def sample_rate(self) -> int:
        return self.config.frontend.sample_rate

    @property
    def patch(self) -> tuple[int, int]:
        return self.encoder.patch

    def forward(self, waveform: torch.Tensor, fft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``fft=True`` computes the log-mel by torch.stft (evaluation in torch; the export keeps the DFT)."""
        return self.outputs(self.encode_audio(waveform, fft))  # (B, S) -> (B, D)

    def outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features ``(B, D)`` -> (embedding ``(B, D)`` or ``(B, D + J)``, joint ``(B, J)``)."""
        joint = self.audio_head(features)  # (B, D) -> (B, J)
        if self.config.embedding_includes_joint:
            return torch.cat([features, joint], dim=1), joint
        return features, joint

    def encode_audio(self, waveform: torch.Tensor, fft: bool = False) -> torch.Tensor:
        return self.encoder(self.frontend(waveform, fft))  # (B, S) -> (B, 1, F, T) -> (B, D)

    def encode_text(self, teacher_embeddings: torch.Tensor) -> torch.Tensor:
        """Frozen-teacher embeddings ``(B, H)`` -> joint ``(B, J)``; needs an aligned model."""
        if self.text_head is None:
            raise RuntimeError(
                "this model has no text head (SSL-only checkpoint): run `acula train align` first"
            )
        return self.text_head(teacher_embeddings)

    def reconstruct(self, spec: torch.Tensor, patch_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked spectrogram modelling: ``(B, 1, F, T)`` + mask ``(B, Fp, Tp)`` -> (prediction, target).

        Both are ``(B, Fp * Tp, pf * pt)``; the loss reads only the masked rows.
        """
        grid = self.encoder.grid(spec, patch_mask)  # (B, C, Fp, Tp)
        return self.decoder(grid), patchify(spec, self.patch)

    def grid_shape(self, num_frames: int) -> tuple[int, int]:
        """Patch grid ``(Fp, Tp)`` for a spectrogram of ``num_frames`` frames."""
        pf, pt = self.patch
        return self.config.frontend.n_mels // pf, num_frames // pt
