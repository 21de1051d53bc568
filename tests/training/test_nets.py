"""Encoders, the model contract, checkpoints, external weights and ONNX parity of AculaAudioModel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acula.training.losses import random_patch_mask
from acula.training.nets.cnn import CNNConfig
from acula.training.nets.factory import build_model, load_checkpoint, load_external_weights, save_checkpoint
from acula.training.nets.frontend import FrontendConfig
from acula.training.nets.model import ModelConfig, patchify
from acula.training.nets.vit import ViTConfig
from tests.support.onnx_session import export_and_open

torch.set_num_threads(2)


def tiny_config(encoder: str = "cnn", **kw) -> ModelConfig:
    return ModelConfig(
        encoder=encoder,
        frontend=FrontendConfig(n_mels=32),
        cnn=CNNConfig(channels=[8, 16, 16], freq_pool=[True, True, False]),
        vit=ViTConfig(patch=8, dim=32, depth=2, heads=2, max_time_patches=64),
        embedding_dim=24,
        joint_dim=16,
        decoder_hidden=16,
        **kw,
    )


@pytest.mark.parametrize("encoder", ["cnn", "vit"])
def test_forward_shapes_and_unit_joint(encoder: str) -> None:
    model = build_model(tiny_config(encoder)).eval()
    embedding, joint = model(torch.randn(3, 16000))
    assert embedding.shape == (3, 24) and joint.shape == (3, 16)
    assert torch.allclose(joint.norm(dim=1), torch.ones(3), atol=1e-5)
    assert model.embedding_dim == 24 and model.joint_dim == 16 and model.sample_rate == 16000
    assert torch.allclose(
        model.encode_audio(torch.zeros(1, 16000) + 0.1), model(torch.zeros(1, 16000) + 0.1)[0]
    )


@pytest.mark.parametrize("encoder", ["cnn", "vit"])
def test_reconstruction_grid_matches_patches(encoder: str) -> None:
    model = build_model(tiny_config(encoder))
    spec = model.frontend(torch.randn(2, 16000))  # (2, 1, 32, 101)
    fp, tp = model.grid_shape(spec.shape[-1])
    mask = random_patch_mask(2, fp, tp, 0.7)
    pred, target = model.reconstruct(spec, mask)
    pf, pt = model.patch
    assert pred.shape == target.shape == (2, fp * tp, pf * pt)


def test_patchify_order_matches_mask_order() -> None:
    spec = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)
    patches = patchify(spec, (2, 3))  # grid (2, 2): row-major over (freq, time)
    assert patches[0, 1].tolist() == [3, 4, 5, 9, 10, 11]
    assert patches[0, 2].tolist() == [12, 13, 14, 18, 19, 20]


def test_checkpoint_round_trip(tmp_path) -> None:
    model = build_model(tiny_config(text_dim=12)).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, step=3)
    loaded = load_checkpoint(path)
    wave = torch.randn(2, 8000)
    assert loaded.config == model.config
    for a, b in zip(model(wave), loaded(wave), strict=True):
        assert torch.allclose(a, b)
    assert torch.load(path, weights_only=True)["step"] == 3


def test_load_checkpoint_refuses_non_checkpoint(tmp_path) -> None:
    torch.save({"weights": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an acula checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


def test_external_weights_with_key_map_reports_missing_and_unexpected(tmp_path) -> None:
    from safetensors.torch import save_file

    source = build_model(tiny_config())
    theirs = {f"backbone.{k}": v.clone() for k, v in source.encoder.state_dict().items()}
    theirs["backbone.extra.weight"] = torch.zeros(3)
    save_file(theirs, str(tmp_path / "w.safetensors"))
    target = build_model(tiny_config())
    missing, unexpected = load_external_weights(
        target, tmp_path / "w.safetensors", key_map=lambda k: k.replace("backbone.", "encoder.", 1)
    )
    assert "encoder.extra.weight" in unexpected
    assert any(k.startswith("audio_head.") for k in missing)
    assert not any(k.startswith("encoder.") for k in missing)
    for k, v in source.encoder.state_dict().items():
        assert torch.equal(target.encoder.state_dict()[k], v)
    # A .pt state dict with a shape mismatch is refused for that tensor and reported.
    bad = {"audio_head.linear.weight": torch.zeros(5, 5)}
    torch.save(bad, tmp_path / "w.pt")
    _, unexpected = load_external_weights(target, tmp_path / "w.pt", verbose=False)
    assert unexpected and "audio_head.linear.weight" in unexpected[0]


@pytest.mark.parametrize("encoder", ["cnn", "vit"])
def test_onnx_round_trip(tmp_path, encoder: str) -> None:
    model = build_model(tiny_config(encoder)).eval()
    session = export_and_open(model, tmp_path / "encoder.onnx", ["embedding", "joint"], 4000, 160000)
    rng = np.random.default_rng(0)
    for shape in [(1, 16000), (4, 16000), (1, 40000), (4, 40000)]:
        wave = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        got = session.run(None, {"waveform": wave})
        with torch.no_grad():
            want = [t.numpy() for t in model(torch.from_numpy(wave))]
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            assert np.abs(g - w).max() <= 1e-4


def test_embedding_can_carry_the_joint_beside_the_features(tmp_path) -> None:
    """With embedding_includes_joint the exported embedding is [features ‖ joint], in torch and in ONNX."""
    model = build_model(tiny_config(text_dim=8, embedding_includes_joint=True)).eval()
    wave = torch.randn(3, 16000)
    embedding, joint = model(wave)
    assert model.embedding_dim == 24 + 16 and embedding.shape == (3, 40)
    assert torch.equal(embedding[:, :24], model.encode_audio(wave)) and torch.equal(embedding[:, 24:], joint)
    session = export_and_open(model, tmp_path / "encoder.onnx", ["embedding", "joint"], 4000, 160000)
    got = session.run(None, {"waveform": wave.numpy()})
    assert got[0].shape == (3, 40)
    assert np.abs(got[0] - embedding.detach().numpy()).max() <= 1e-4
    # A checkpoint keeps the choice, so the bundle exported from it embeds the same way.
    save_checkpoint(tmp_path / "m.pt", model)
    assert load_checkpoint(tmp_path / "m.pt").embedding_dim == 40
