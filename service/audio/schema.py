"""What goes into the decoder (``AudioLimits``) and what comes out (``AudioInfo``, ``DecodedAudio``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# 600 s of 48 kHz stereo: every real recording the limits admit by duration, at a phone's or recorder's rate.
DEFAULT_MAX_SAMPLES = 600 * 48_000 * 2


class AudioLimits(BaseModel):
    """Bounds checked against the header before decoding, and again while decoding.

    The defaults suit the CLI and training (every recording in the shared data passes them except the
    empty and silent ones); the service passes its own upload size and duration limits and the bundle's
    ``min_seconds``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=256 * 1024 * 1024, gt=0, description="Largest encoded input, in bytes.")
    max_seconds: float = Field(default=600.0, gt=0, description="Longest recording; decoding stops past it.")
    min_seconds: float = Field(default=0.0, ge=0, description="Shortest recording accepted.")
    max_channels: int = Field(
        default=8, ge=1, description="Most channels accepted (they are averaged to mono)."
    )
    min_rate: int = Field(default=1000, gt=0, description="Lowest native sample rate accepted, in Hz.")
    max_rate: int = Field(default=384000, gt=0, description="Highest native sample rate accepted, in Hz.")
    max_samples: int = Field(
        default=DEFAULT_MAX_SAMPLES,
        gt=0,
        description="Most samples (frames x channels, at the native rate) decoded from one input: the cost "
        "of a decode, which a duration limit alone does not bound (600 s at 384 kHz is 8x 600 s at 48 kHz).",
    )
    max_level: float = Field(
        default=16.0,
        gt=0,
        description="Largest absolute sample value accepted (full scale is 1.0). Only float formats can "
        "exceed 1.0; far beyond it the encoder's arithmetic overflows and its output means nothing.",
    )
    reject_silence: bool = Field(default=True, description="Refuse recordings whose samples are all equal.")

    @model_validator(mode="after")
    def _ordered(self) -> AudioLimits:
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds {self.min_seconds} exceeds max_seconds {self.max_seconds}")
        if self.min_rate > self.max_rate:
            raise ValueError(f"min_rate {self.min_rate} exceeds max_rate {self.max_rate}")
        return self


@dataclass(frozen=True)
class AudioInfo:
    """What the header says, before any sample is decoded.

    ``frames`` is the length the file declares (for WAV, the ``data`` chunk's claim even when the file is
    shorter); ``None`` when the container does not say. ``decoder`` is the library that opened it.
    """

    format: str
    subtype: str
    channels: int
    native_rate: int
    frames: int | None
    size_bytes: int
    decoder: str

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.native_rate


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 ``samples`` at ``rate`` Hz, and what the source was.

    ``duration_s`` is the decoded length at the native rate (frames / native_rate), which is what a user
    compares with their file; ``len(samples) / rate`` differs from it only by resampling rounding.
    """

    samples: np.ndarray
    rate: int
    native_rate: int
    duration_s: float
    channels: int
    format: str
    subtype: str
