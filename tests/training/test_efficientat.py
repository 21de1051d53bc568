"""EfficientAT mn04 against the outputs of the original implementation (``reference.npz``).

Every comparison is absolute, in float32, against numbers the original code computed with torch.stft and
torchaudio's Kaldi filters. Our conv1d DFT, our summation orders and onnxruntime's kernels differ from theirs
only by float32 rounding: measured, about 1e-5 at most on the feature map and a few 1e-6 on the log-mel, the
pooled embedding and the logits (whose values reach ~20). One bound of 1e-4 therefore holds everywhere with a
margin, and still catches a wrong convention: mel triangles in Hz, a periodic window, zero padding, the
window at the frame's start or BatchNorm's default eps each move the logits by 4e-3 or more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from acula.training.losses import random_patch_mask
from acula.training.nets.efficientat import (
    MN04_AS_SHA256,
    MobileNetConfig,
    MobileNetEncoder,
    efficientat_frontend,
    file_sha256,
    load_pretrained,
    source_names,
)
from acula.training.nets.factory import load_checkpoint, pretrained_mobilenet, save_checkpoint
from acula.training.nets.frontend import FrontendConfig, LogMelFrontend
from acula.training.nets.model import AculaAudioModel, ModelConfig

torch.set_num_threads(2)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    """``<repo root>/../shared/weights/efficientat-mn04-as`` (never copied into the repo); skip if absent."""
    root = REPO_ROOT.parent / "shared" / "weights" / "efficientat-mn04-as"
    if not (root / "mn04_as_mAP_432.pt").is_file():
        pytest.skip(
            f"EfficientAT weights not found at {root}: place the shared weights folder beside the repo"
        )
    return root


@pytest.fixture(scope="module")
def weights(weights_dir: Path) -> Path:
    return weights_dir / "mn04_as_mAP_432.pt"


@pytest.fixture(scope="module")
def reference(weights_dir: Path) -> dict[str, np.ndarray]:
    with np.load(weights_dir / "reference.npz") as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def encoder(weights: Path) -> MobileNetEncoder:
    net = MobileNetEncoder(MobileNetConfig(pooling="mean"), n_mels=128)
    load_pretrained(net, weights)
    return net.eval()


def max_diff(ours: torch.Tensor | np.ndarray, theirs: np.ndarray) -> float:
    got = ours.detach().numpy() if isinstance(ours, torch.Tensor) else ours
    assert got.shape == theirs.shape
    return float(np.abs(got - theirs).max())


def test_weights_file_is_the_published_one(weights: Path) -> None:
    assert file_sha256(weights) == MN04_AS_SHA256


def test_strict_load_uses_every_tensor(weights: Path, encoder: MobileNetEncoder) -> None:
    source = torch.load(weights, map_location="cpu", weights_only=True)
    assert len(source) == 312
    modules = source_names(encoder)
    own = encoder.state_dict()
    used = set()
    for key, tensor in own.items():
        if key == "mask_value":
            continue
        module, _, leaf = key.rpartition(".")
        theirs = f"{modules[module]}.{leaf}"
        assert torch.equal(tensor, source[theirs]), key
        used.add(theirs)
    assert used == set(source)  # BatchNorm num_batches_tracked included
    assert sum(v.numel() for v in source.values()) == 993_485


@pytest.mark.parametrize("tamper", ["extra", "missing", "shape"])
def test_strict_load_names_what_does_not_fit(tmp_path: Path, weights: Path, tamper: str) -> None:
    source = torch.load(weights, map_location="cpu", weights_only=True)
    if tamper == "extra":
        source["features.17.weight"] = torch.zeros(3)
        expected = "features.17.weight"
    elif tamper == "missing":
        del source["features.4.block.2.conc_se_layers.0.fc1.bias"]
        expected = "blocks.3.se.fc1.bias"
    else:
        source["classifier.5.weight"] = torch.zeros(10, 512)
        expected = "classifier.out.weight"
    torch.save(source, tmp_path / "w.pt")
    net = MobileNetEncoder(MobileNetConfig(), n_mels=128)
    with pytest.raises(ValueError, match="SHA-256"):
        load_pretrained(net, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=expected.replace(".", r"\.")):
        load_pretrained(net, tmp_path / "w.pt", sha256=None)


def test_network_reproduces_random_reference(
    encoder: MobileNetEncoder, reference: dict[str, np.ndarray]
) -> None:
    """The network alone, on a fixed random log-mel of 250 frames (not a multiple of 32: strides round up)."""
    with torch.no_grad():
        logits, pooled = encoder.audioset(torch.from_numpy(reference["random_logmel"]))
    assert max_diff(logits, reference["random_logits"]) < TOLERANCE
    assert max_diff(pooled, reference["random_pooled"]) < TOLERANCE


def test_frontend_reproduces_logmel(reference: dict[str, np.ndarray]) -> None:
    """Pre-emphasis, 800-sample symmetric Hann centred in 1024, reflect padding, Kaldi mels, (x + 4.5) / 5."""
    frontend = LogMelFrontend(efficientat_frontend())
    with torch.no_grad():
        logmel = frontend(torch.from_numpy(reference["waveform_32k"])[None])  # (1, 1, 128, 800)
    assert frontend.num_frames(len(reference["waveform_32k"])) == 800
    assert max_diff(logmel[0], reference["logmel"]) < TOLERANCE


def test_model_reproduces_reference_from_waveform(weights: Path, reference: dict[str, np.ndarray]) -> None:
    """Waveform in: the frozen pretrained embedding (pooling mean) IS EfficientAT's AudioSet embedding."""
    model = pretrained_mobilenet(pooling="mean", weights=weights).eval()
    wave = torch.from_numpy(reference["waveform_32k"])[None]
    with torch.no_grad():
        embedding, joint = model(wave)
        spec = model.frontend(wave)
        fmap = model.encoder.feature_map(spec)
        logits, pooled = model.encoder.audioset(spec)
    assert model.embedding_dim == 384 and joint.shape == (1, 256)
    assert max_diff(fmap[0], reference["feature_map"]) < TOLERANCE
    assert max_diff(logits[0], reference["logits"]) < TOLERANCE
    assert max_diff(pooled[0], reference["pooled"]) < TOLERANCE
    assert max_diff(embedding[0], reference["pooled"]) < TOLERANCE


def test_frequency_pooling_keeps_bands(weights: Path, reference: dict[str, np.ndarray]) -> None:
    """``freq``: 4 bands x 384 channels, band after band; their mean is the AudioSet embedding."""
    model = pretrained_mobilenet(pooling="freq", weights=weights).eval()
    with torch.no_grad():
        embedding, _ = model(torch.from_numpy(reference["waveform_32k"])[None])
    assert model.embedding_dim == 1536 and embedding.shape == (1, 1536)
    bands = embedding.reshape(1, 4, 384)
    assert max_diff(bands.mean(dim=1)[0], reference["pooled"]) < TOLERANCE
    assert max_diff(bands[0, 0], reference["feature_map"][:, 0].mean(axis=1)) < TOLERANCE


def test_masked_spectrogram_path(weights: Path) -> None:
    """A 4-s window (400 frames) gives a 4 x 12 patch grid: the 16 frames after the last patch are dropped."""
    model = pretrained_mobilenet(weights=weights).eval()
    spec = model.frontend(0.1 * torch.randn(2, 4 * 32000))  # (2, 1, 128, 400)
    assert model.patch == (32, 32) and model.grid_shape(spec.shape[-1]) == (4, 12)
    mask = random_patch_mask(2, 4, 12, 0.7, generator=torch.Generator().manual_seed(0))
    pred, target = model.reconstruct(spec, mask)
    assert pred.shape == target.shape == (2, 48, 32 * 32)
    grid = model.encoder.grid(spec)
    assert grid.shape == (2, 384, 4, 12)
    assert torch.allclose(grid, model.encoder.feature_map(spec[..., :384]))
    assert not torch.allclose(model.encoder.grid(spec, mask), grid)  # the hidden patches changed


def test_checkpoint_round_trip_without_the_weights_file(tmp_path: Path, weights: Path) -> None:
    """A checkpoint carries its weights: loading it never reads ``mobilenet.pretrained`` again."""
    mobilenet = MobileNetConfig(pooling="freq", pretrained=tmp_path / "gone.pt")
    config = ModelConfig(encoder="mobilenet", mobilenet=mobilenet, joint_dim=32, text_dim=12)
    model = AculaAudioModel(config).eval()
    assert isinstance(model.encoder, MobileNetEncoder)
    load_pretrained(model.encoder, weights)
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_checkpoint(path)
    assert loaded.config == config and loaded.config.frontend == efficientat_frontend()
    wave = 0.1 * torch.randn(2, 32000)
    for a, b in zip(model(wave), loaded(wave), strict=True):
        assert torch.equal(a, b)


def test_model_config_contract() -> None:
    """mobilenet fills in its front-end and embedding width, and refuses ones that contradict the weights."""
    config = ModelConfig(encoder="mobilenet", mobilenet=MobileNetConfig(pooling="mean"))
    assert config.frontend == efficientat_frontend() and config.sample_rate == 32000
    assert config.embedding_dim == 384
    assert ModelConfig.model_validate(config.model_dump(mode="json")) == config
    assert ModelConfig(encoder="mobilenet").embedding_dim == 1536
    with pytest.raises(ValueError, match="embedding_dim"):
        ModelConfig(encoder="mobilenet", embedding_dim=256)
    with pytest.raises(ValueError, match="front-end"):
        ModelConfig(
            encoder="mobilenet",
            frontend=FrontendConfig(n_mels=128),
            mobilenet=MobileNetConfig(pretrained=Path("w.pt")),
        )
    assert ModelConfig().frontend == FrontendConfig()  # the CNN keeps its own front-end


def test_random_init_fits_the_model_contract() -> None:
    """Without weights (no file needed), forward and the joint head work at any length, batch included."""
    model = AculaAudioModel(ModelConfig(encoder="mobilenet", joint_dim=16)).eval()
    with torch.no_grad():
        embedding, joint = model(0.1 * torch.randn(3, 20000))
    assert embedding.shape == (3, 1536) and joint.shape == (3, 16)
    assert torch.allclose(joint.norm(dim=1), torch.ones(3), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "freq"])
def test_onnx_reproduces_reference(
    tmp_path: Path, weights: Path, reference: dict[str, np.ndarray], pooling: Literal["mean", "freq"]
) -> None:
    """The exported graph (front-end inside, conv1d DFT, no STFT op) gives the AudioSet embedding, and
    follows torch at other batch sizes and lengths."""
    import onnx
    import onnxruntime as ort

    from acula.training.export.onnx import export_encoder

    model = pretrained_mobilenet(pooling=pooling, weights=weights).eval()
    path = export_encoder(model, tmp_path / "encoder.onnx", 4 * 32000, 1024, 600 * 32000)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {"STFT", "DFT"} and "Conv" in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    embedding, _ = session.run(None, {"waveform": reference["waveform_32k"][None]})
    pooled = embedding[0] if pooling == "mean" else embedding[0].reshape(4, 384).mean(axis=0)
    assert max_diff(pooled, reference["pooled"]) < TOLERANCE
    rng = np.random.default_rng(0)
    for shape in [(1, 4 * 32000), (3, 4 * 32000), (2, 10 * 32000 + 123)]:
        wave = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        got = session.run(None, {"waveform": wave})
        with torch.no_grad():
            want = model(torch.from_numpy(wave))
        for g, w in zip(got, want, strict=True):
            assert max_diff(w, g) < TOLERANCE
