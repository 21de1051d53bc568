"""Waveform -> log-mel front-end that exports to ONNX.

``torch.stft`` does not export cleanly (complex tensors), so the STFT is written as a ``conv1d`` with a fixed
windowed DFT basis: one kernel per frequency bin for the real part and one for the imaginary part. The basis
and the mel filterbank are non-trainable buffers computed in numpy, so the ONNX graph, the torch module and
the numpy reference in the tests compute exactly the same thing.

One class serves two recipes, chosen by :class:`FrontendConfig` (the defaults are the first):

- the CNN's own: 16 kHz, periodic Hann over the whole ``n_fft``, zero padding of ``n_fft // 2`` on each side
  (torch.stft(center=True, pad_mode="constant")), HTK mel filters, per-clip mean/std normalisation;
- the one EfficientAT's AudioSet weights were trained with (``efficientat.efficientat_frontend``): 32 kHz,
  pre-emphasis, a symmetric Hann of ``win_length`` centred inside ``n_fft`` (as torch.stft places a shorter
  window), reflect padding, Kaldi mel filters, a fixed affine normalisation.

Reflect padding exports as an ONNX ``Pad(mode="reflect")`` with a dynamic length (checked in the tests); it
needs the clip to be longer than the padding, i.e. more than ``n_fft // 2`` samples.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn


class FrontendConfig(BaseModel):
    """Log-mel settings; serialised with the checkpoint so preprocessing cannot drift from the weights."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: int = Field(16000, ge=1000, description="Rate the model expects, Hz.")
    n_fft: int = Field(400, ge=16, description="FFT size (25 ms at 16 kHz).")
    win_length: int | None = Field(
        None, ge=16, description="Window length, at most n_fft, centred in the FFT frame; None means n_fft."
    )
    window: Literal["hann", "hann_symmetric"] = Field(
        "hann", description="hann: periodic (torch.hann_window default); hann_symmetric: periodic=False."
    )
    hop_length: int = Field(160, ge=1, description="Frame step (10 ms at 16 kHz).")
    pad_mode: Literal["constant", "reflect"] = Field(
        "constant", description="Centring padding of n_fft // 2 on each side: zeros, or a mirror of the clip."
    )
    preemphasis: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="y[n] = x[n] - c x[n-1] before the STFT (one sample shorter); None: none.",
    )
    n_mels: int = Field(64, ge=8, description="Mel bands.")
    mel_scale: Literal["htk", "kaldi"] = Field(
        "htk",
        description="htk: 2595 log10(1 + f/700), triangles in Hz; kaldi: 1127 ln(1 + f/700), triangles in "
        "mel, the Nyquist bin left out.",
    )
    f_min: float = Field(20.0, ge=0, description="Lowest mel band edge, Hz.")
    f_max: float | None = Field(None, description="Highest mel band edge, Hz; None means sample_rate / 2.")
    eps: float = Field(1e-6, gt=0, description="Added to the mel power before the log.")
    normalise: Literal["clip", "fixed", "none"] = Field(
        "clip",
        description="clip: per-clip zero mean, unit variance; fixed: (logmel - fixed_mean) / fixed_std; "
        "none. (Older checkpoints store a bool: true means clip, false none.)",
    )
    fixed_mean: float = Field(0.0, description="Subtracted from the log-mel when normalise is fixed.")
    fixed_std: float = Field(1.0, gt=0, description="Divides the log-mel when normalise is fixed.")

    @field_validator("normalise", mode="before")
    @classmethod
    def _legacy_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # checkpoints written before the fixed normalisation existed
            return "clip" if value else "none"
        return value

    @property
    def window_length(self) -> int:
        return self.win_length if self.win_length is not None else self.n_fft


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def _check_band(sample_rate: int, f_min: float, f_max: float) -> None:
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}")


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular HTK mel filters, ``(n_freqs, n_mels)`` float32 with ``n_freqs = n_fft // 2 + 1``."""
    _check_band(sample_rate, f_min, f_max)
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def kaldi_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Kaldi's triangular mel filters (torchaudio.compliance.kaldi.get_mel_banks), ``(n_freqs, n_mels)``.

    The triangles are straight in mel (1127 ln(1 + f/700)), not in Hz: filter ``b`` rises from
    ``lo + b d`` to ``lo + (b + 1) d`` and falls to ``lo + (b + 2) d`` with ``d = (hi - lo) / (n_mels + 1)``.
    They are evaluated at the bins ``k < n_fft // 2``; the Nyquist bin gets weight 0, as in Kaldi.
    """
    _check_band(sample_rate, f_min, f_max)

    def mel(hz: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)

    lo, hi = mel(f_min), mel(f_max)
    delta = (hi - lo) / (n_mels + 1)
    band = np.arange(n_mels)[None, :]
    left, centre, right = lo + band * delta, lo + (band + 1) * delta, lo + (band + 2) * delta
    bin_mel = mel(np.arange(n_fft // 2) * sample_rate / n_fft)[:, None]  # (n_fft / 2, 1)
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_fft / 2, n_mels)
    nyquist = np.zeros((1, n_mels))
    return np.concatenate([weights, nyquist], axis=0).astype(np.float32)


def hann(length: int, periodic: bool) -> np.ndarray:
    """Hann window as torch.hann_window: periodic divides by ``length``, symmetric by ``length - 1``."""
    n = np.arange(length)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / (length if periodic else length - 1))


def dft_basis(
    n_fft: int, win_length: int | None = None, periodic: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Windowed DFT kernels, each ``(n_freqs, 1, win_length)``: real (cos) and imaginary (-sin) parts.

    torch.stft zero-pads a window shorter than ``n_fft`` to the middle of the frame; those zeros contribute
    nothing, so the kernels hold only the ``win_length`` taps, with the phase of their place in the frame
    (sample ``m`` of the window is sample ``offset + m`` of the frame). The power spectrum is the same as
    torch.stft's; the convolution is ``n_fft / win_length`` times cheaper.
    """
    win = win_length if win_length is not None else n_fft
    if not 1 < win <= n_fft:
        raise ValueError(f"need 1 < win_length <= n_fft, got win_length={win}, n_fft={n_fft}")
    offset = (n_fft - win) // 2
    n = np.arange(win) + offset  # position in the frame
    k = np.arange(n_fft // 2 + 1)[:, None]
    phase = 2.0 * np.pi * k * n[None, :] / n_fft
    window = hann(win, periodic)
    real = (np.cos(phase) * window)[:, None, :].astype(np.float32)
    imag = (-np.sin(phase) * window)[:, None, :].astype(np.float32)
    return real, imag


class LogMelFrontend(nn.Module):
    """``(B, S)`` waveform at ``config.sample_rate`` -> ``(B, 1, n_mels, T)`` log-mel.

    ``T = S' // hop + 1`` with ``S' = S`` (``S - 1`` with pre-emphasis), as torch.stft(center=True).
    """

    basis: torch.Tensor  # (2 n_freqs, 1, win_length)
    mel: torch.Tensor  # (n_freqs, n_mels)

    def __init__(self, config: FrontendConfig | None = None) -> None:
        super().__init__()
        self.config = config or FrontendConfig()
        c = self.config
        f_max = c.f_max if c.f_max is not None else c.sample_rate / 2
        real, imag = dft_basis(c.n_fft, c.window_length, periodic=c.window == "hann")
        # One conv1d computes both parts: output channels [0, n_freqs) real, [n_freqs, 2 n_freqs) imaginary.
        self.register_buffer(
            "basis", torch.from_numpy(np.concatenate([real, imag], axis=0)), persistent=False
        )
        filters = kaldi_mel_filterbank if c.mel_scale == "kaldi" else mel_filterbank
        mel = filters(c.sample_rate, c.n_fft, c.n_mels, c.f_min, f_max)
        self.register_buffer("mel", torch.from_numpy(mel), persistent=False)
        self.n_freqs = c.n_fft // 2 + 1
        # Centring pads n_fft // 2 each side; the kernels skip the window's zero margins inside the frame.
        offset = (c.n_fft - c.window_length) // 2
        self.padding = (c.n_fft // 2 - offset, c.n_fft // 2 - (c.n_fft - offset - c.window_length))

    def preemphasise(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(B, S - 1)``: the valid convolution with ``[-c, 1]``; identity when off."""
        c = self.config.preemphasis
        if c is None:
            return waveform
        return waveform[:, 1:] - c * waveform[:, :-1]

    def power_spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` (already pre-emphasised) -> ``(B, n_freqs, T)`` power, ``T = S // hop + 1``."""
        x = waveform.unsqueeze(1)  # (B, 1, S)
        if self.config.pad_mode == "reflect":
            x = nn.functional.pad(x, self.padding, mode="reflect")  # (B, 1, S + win_length)
        else:
            x = nn.functional.pad(x, self.padding)  # zeros
        spec = nn.functional.conv1d(x, self.basis, stride=self.config.hop_length)  # (B, 2 n_freqs, T)
        real, imag = spec[:, : self.n_freqs], spec[:, self.n_freqs :]
        return real * real + imag * imag

    def power_spectrogram_fft(self, waveform: torch.Tensor) -> torch.Tensor:
        """The same power spectrum through torch.stft: an FFT needs about a fifteenth of the DFT basis's
        operations at n_fft 1024, but does not export to ONNX, so it serves only to precompute training
        log-mels (a test holds the two equal)."""
        c = self.config
        window = torch.from_numpy(hann(c.window_length, periodic=c.window == "hann")).to(waveform.dtype)
        spec = torch.stft(
            waveform,
            c.n_fft,
            hop_length=c.hop_length,
            win_length=c.window_length,
            window=window.to(waveform.device),
            center=True,
            pad_mode=c.pad_mode,
            return_complex=True,
        )  # (B, n_freqs, T) complex
        return spec.real.square() + spec.imag.square()

    def forward(self, waveform: torch.Tensor, fft: bool = False) -> torch.Tensor:
        """``fft=True``: the power spectrum by :meth:`power_spectrogram_fft` (precomputing, not export)."""
        emphasised = self.preemphasise(waveform)
        power = self.power_spectrogram_fft(emphasised) if fft else self.power_spectrogram(emphasised)
        mel = torch.matmul(power.transpose(1, 2), self.mel).transpose(1, 2)  # (B, n_mels, T)
        logmel = torch.log(mel + self.config.eps)
        if self.config.normalise == "clip":
            logmel = self.normalise(logmel)
        elif self.config.normalise == "fixed":
            logmel = (logmel - self.config.fixed_mean) / self.config.fixed_std
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
        shorter = 1 if self.config.preemphasis is not None else 0
        return (num_samples - shorter) // self.config.hop_length + 1
