"""Waveform -> log-mel front-end that exports to ONNX.

``torch.stft`` does not export cleanly (complex tensors, reflect padding), so the STFT is written as a
``conv1d`` with a fixed windowed DFT basis: one kernel per frequency bin for the real part and one for the
imaginary part. The basis and the mel filterbank are non-trainable buffers computed in numpy, so the ONNX
graph, the torch module and the numpy reference in the tests compute exactly the same thing.

Padding is constant (zeros, ``n_fft // 2`` on each side, as torch.stft(center=True, pad_mode="constant"))
because reflect padding of a dynamic-length input is a common source of export failures.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class FrontendConfig(BaseModel):
    """Log-mel settings; serialised with the checkpoint so preprocessing cannot drift from the weights."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: int = Field(16000, ge=1000, description="Rate the model expects, Hz.")
    n_fft: int = Field(400, ge=16, description="FFT size and window length (25 ms at 16 kHz).")
    hop_length: int = Field(160, ge=1, description="Frame step (10 ms at 16 kHz).")
    n_mels: int = Field(64, ge=8, description="Mel bands.")
    f_min: float = Field(20.0, ge=0, description="Lowest mel band edge, Hz.")
    f_max: float | None = Field(None, description="Highest mel band edge, Hz; None means sample_rate / 2.")
    eps: float = Field(1e-6, gt=0, description="Added to the mel power before the log.")
    normalise: bool = Field(True, description="Per-clip mean/std normalisation of the log-mel.")


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular HTK mel filters, ``(n_freqs, n_mels)`` float32 with ``n_freqs = n_fft // 2 + 1``."""
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}")
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def dft_basis(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed DFT kernels, each ``(n_freqs, 1, n_fft)``: real (cos) and imaginary (-sin) parts."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)  # periodic Hann, as torch.hann_window
    k = np.arange(n_fft // 2 + 1)[:, None]
    phase = 2.0 * np.pi * k * n[None, :] / n_fft
    real = (np.cos(phase) * window)[:, None, :].astype(np.float32)
    imag = (-np.sin(phase) * window)[:, None, :].astype(np.float32)
    return real, imag


class LogMelFrontend(nn.Module):
    """``(B, S)`` waveform at ``config.sample_rate`` -> ``(B, 1, n_mels, T)`` log-mel, T = S // hop + 1."""

    def __init__(self, config: FrontendConfig | None = None) -> None:
        super().__init__()
        self.config = config or FrontendConfig()
        c = self.config
        f_max = c.f_max if c.f_max is not None else c.sample_rate / 2
        real, imag = dft_basis(c.n_fft)
        # One conv1d computes both parts: output channels [0, n_freqs) real, [n_freqs, 2 n_freqs) imaginary.
        self.register_buffer(
            "basis", torch.from_numpy(np.concatenate([real, imag], axis=0)), persistent=False
        )
        mel = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, f_max)
        self.register_buffer("mel", torch.from_numpy(mel), persistent=False)
        self.n_freqs = c.n_fft // 2 + 1

    def power_spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(B, n_freqs, T)`` power."""
        pad = self.config.n_fft // 2
        x = nn.functional.pad(waveform.unsqueeze(1), (pad, pad))  # (B, 1, S + n_fft), zeros
        spec = nn.functional.conv1d(x, self.basis, stride=self.config.hop_length)  # (B, 2 n_freqs, T)
        real, imag = spec[:, : self.n_freqs], spec[:, self.n_freqs :]
        return real * real + imag * imag

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        power = self.power_spectrogram(waveform)  # (B, n_freqs, T)
        mel = torch.matmul(power.transpose(1, 2), self.mel).transpose(1, 2)  # (B, n_mels, T)
        logmel = torch.log(mel + self.config.eps)
        if self.config.normalise:
            logmel = self.normalise(logmel)
        return logmel.unsqueeze(1)  # (B, 1, n_mels, T)

    @staticmethod
    def normalise(logmel: torch.Tensor) -> torch.Tensor:
        """Per-clip zero mean, unit variance, with the statistics accumulated in float64.

        A clip holds ``n_mels x T`` values (16,000 for 4 s); onnxruntime sums a float32 ReduceMean that
        long with a relative error near 2e-5 (torch: 5e-8), which the division passes on to every value and
        the encoder amplifies to ~2e-4 at the embedding, past the export's 1e-4 parity bound. In float64
        both runtimes agree to float32 rounding, and the cost (two reductions per clip) is negligible.
        """
        wide = logmel.double()
        mean = wide.mean(dim=(1, 2), keepdim=True)
        std = wide.std(dim=(1, 2), keepdim=True)
        return ((wide - mean) / (std + 1e-5)).to(logmel.dtype)

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.config.hop_length + 1
