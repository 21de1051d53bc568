"""The conv1d log-mel front-end against torch.stft and a numpy reference, and its ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acula.training.nets.efficientat import efficientat_frontend
from acula.training.nets.frontend import FrontendConfig, LogMelFrontend, kaldi_mel_filterbank, mel_filterbank
from tests.support.onnx_session import export_and_open

torch.set_num_threads(2)


def _numpy_logmel(wave: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """Independent reference: framing + np.fft.rfft + the same mel matrix, float64."""
    pad = cfg.n_fft // 2
    x = np.pad(wave.astype(np.float64), (pad, pad))
    n_frames = (len(x) - cfg.n_fft) // cfg.hop_length + 1
    window = np.hanning(cfg.n_fft + 1)[:-1]  # periodic Hann
    frames = np.stack([x[i * cfg.hop_length : i * cfg.hop_length + cfg.n_fft] for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (T, n_freqs)
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.sample_rate / 2)
    logmel = np.log(power @ mel.astype(np.float64) + cfg.eps).T  # (n_mels, T)
    return (logmel - logmel.mean()) / (logmel.std(ddof=1) + 1e-5)


@pytest.mark.parametrize("num_samples", [400, 16000, 16123, 64000, 160000])
def test_matches_numpy_reference(num_samples: int) -> None:
    cfg = FrontendConfig()
    rng = np.random.default_rng(num_samples)
    t = np.arange(num_samples) / cfg.sample_rate
    # A heart-like 150 Hz tone in broadband noise. (A float32 direct DFT cannot match a float64 FFT to 1e-4
    # in log units for bands ~50 dB below the frame's peak; real auscultation audio has a noise floor above.)
    wave = (0.1 * np.sin(2 * np.pi * 150 * t) + 0.1 * rng.standard_normal(num_samples)).astype(np.float32)
    ours = LogMelFrontend(cfg)(torch.from_numpy(wave)[None])[0, 0].numpy()
    ref = _numpy_logmel(wave, cfg)
    assert ours.shape == ref.shape == (cfg.n_mels, num_samples // cfg.hop_length + 1)
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("num_samples", [1600, 48000])
def test_power_matches_torch_stft(num_samples: int) -> None:
    cfg = FrontendConfig()
    wave = torch.randn(2, num_samples)
    ours = LogMelFrontend(cfg).power_spectrogram(wave)
    spec = torch.stft(
        wave.double(),
        cfg.n_fft,
        cfg.hop_length,
        window=torch.hann_window(cfg.n_fft, dtype=torch.float64),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    ref = spec.abs() ** 2
    # Relative to the spectrum's scale: float32 conv against float64 FFT.
    assert ((ours.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


@pytest.mark.parametrize("num_samples", [1601, 48000])
def test_short_symmetric_window_and_reflect_padding_match_torch_stft(num_samples: int) -> None:
    """EfficientAT's STFT: 800-sample symmetric Hann centred in a 1024 frame, reflect padding, pre-emphasis.

    Our kernels hold only the 800 window taps; torch.stft zero-pads the window to 1024 in the middle.
    """
    cfg = efficientat_frontend()
    frontend = LogMelFrontend(cfg)
    wave = torch.randn(2, num_samples)
    emphasised = frontend.preemphasise(wave)
    assert emphasised.shape == (2, num_samples - 1)
    assert torch.allclose(emphasised[:, 5], wave[:, 6] - 0.97 * wave[:, 5])
    ours = frontend.power_spectrogram(emphasised)
    spec = torch.stft(
        emphasised.double(),
        cfg.n_fft,
        cfg.hop_length,
        win_length=cfg.win_length,
        window=torch.hann_window(cfg.window_length, periodic=False, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    ref = spec.abs() ** 2
    assert ours.shape == ref.shape and ours.shape[-1] == frontend.num_frames(num_samples)
    assert ((ours.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_kaldi_filters() -> None:
    """Triangles straight in Kaldi mel, 0..15 kHz, the Nyquist bin left out, each peaking at its centre."""
    mel = kaldi_mel_filterbank(32000, 1024, 128, 0.0, 15000.0)
    assert mel.shape == (513, 128)
    assert (mel[512] == 0).all() and (mel.sum(axis=0) > 0).all()
    assert (mel >= 0).all() and mel.max() <= 1.0
    bin_mel = 1127.0 * np.log1p(np.arange(512) * 32000 / 1024 / 700.0)
    delta = 1127.0 * np.log1p(15000.0 / 700.0) / 129
    assert np.all(mel[:512][bin_mel >= 129 * delta] == 0)  # nothing above f_max
    peak = mel[:512].argmax(axis=0)  # the bin nearest each centre, in mel
    centre = (np.arange(128) + 1) * delta
    assert np.all(np.abs(bin_mel[peak] - centre) <= np.diff(bin_mel)[np.minimum(peak, 510)])


def test_normalisation_modes_and_legacy_bool() -> None:
    assert FrontendConfig.model_validate({"normalise": True}).normalise == "clip"
    assert FrontendConfig.model_validate({"normalise": False}).normalise == "none"
    wave = torch.randn(1, 16000)
    raw = LogMelFrontend(FrontendConfig(normalise="none"))(wave)
    fixed = LogMelFrontend(FrontendConfig(normalise="fixed", fixed_mean=-4.5, fixed_std=5.0))(wave)
    assert torch.allclose(fixed, (raw + 4.5) / 5, atol=1e-6)


def test_every_mel_filter_has_weight() -> None:
    cfg = FrontendConfig()
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.sample_rate / 2)
    assert mel.shape == (cfg.n_fft // 2 + 1, cfg.n_mels)
    assert (mel.sum(axis=0) > 0).all(), "an empty mel band would be constant after normalisation"


def test_basis_is_not_trainable() -> None:
    frontend = LogMelFrontend()
    assert list(frontend.parameters()) == []


def test_onnx_export_dynamic_batch_and_length(tmp_path) -> None:
    frontend = LogMelFrontend().eval()
    session = export_and_open(frontend, tmp_path / "frontend.onnx", ["logmel"], 800, 480000)
    for shape in [(1, 8000), (3, 24321)]:
        wave = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        got = session.run(None, {"waveform": wave})[0]
        want = frontend(torch.from_numpy(wave)).numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4


def test_onnx_export_with_reflect_padding_keeps_length_dynamic(tmp_path) -> None:
    """Reflect padding exports as ONNX Pad(mode=reflect) and follows the input length (no STFT op)."""
    import onnx

    frontend = LogMelFrontend(efficientat_frontend()).eval()
    session = export_and_open(frontend, tmp_path / "frontend.onnx", ["logmel"], 1024, 640000)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "frontend.onnx")).graph.node}
    assert "STFT" not in ops and "Pad" in ops
    for shape in [(1, 5000), (3, 32123)]:
        wave = (0.1 * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
        got = session.run(None, {"waveform": wave})[0]
        want = frontend(torch.from_numpy(wave)).numpy()
        assert got.shape == want.shape == (shape[0], 1, 128, (shape[1] - 1) // 320 + 1)
        assert np.abs(got - want).max() < 1e-4


def test_onnx_normalisation_statistics_match_torch_on_long_real_audio(tmp_path, shared_data) -> None:
    """onnxruntime sums a long float32 ReduceMean with ~2e-5 relative error; the per-clip statistics are
    therefore taken in float64. On a minute of real audio (~384,000 log-mel values at 16 kHz) the difference
    was 1.1e-3 with float32 statistics and is 7e-5 with float64 ones (what remains is the float32 DFT in the
    quietest bands, which the log magnifies)."""
    from acula.service.audio import decode_audio

    recordings = sorted((shared_data / "sprsound").rglob("*.flac"))[:12]
    wave = np.concatenate([decode_audio(path, 16000).samples for path in recordings])[: 60 * 16000]
    assert len(wave) == 60 * 16000
    frontend = LogMelFrontend().eval()
    session = export_and_open(frontend, tmp_path / "frontend.onnx", ["logmel"])
    got = session.run(None, {"waveform": wave[None].astype(np.float32)})[0]
    with torch.no_grad():
        want = frontend(torch.from_numpy(wave[None].astype(np.float32))).numpy()
    assert np.abs(got - want).max() < 2e-4


@pytest.mark.parametrize("recipe", ["cnn", "efficientat"])
def test_fft_path_computes_the_same_log_mel(recipe: str) -> None:
    """Training precomputes log-mels through torch.stft; the model and its ONNX graph use the conv1d DFT."""
    frontend = LogMelFrontend(efficientat_frontend() if recipe == "efficientat" else FrontendConfig()).eval()
    rate = frontend.config.sample_rate
    wave = torch.from_numpy(
        (0.1 * np.random.default_rng(1).standard_normal((2, 3 * rate + 17))).astype(np.float32)
    )
    with torch.no_grad():
        assert torch.abs(frontend(wave, fft=True) - frontend(wave)).max() < 1e-4
