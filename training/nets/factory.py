"""Build, save, load: the one place checkpoints are read and written.

A checkpoint is ``torch.save({"config": ModelConfig.model_dump(), "model": state_dict, ...})``; it is read
with ``weights_only=True`` (no pickle execution), and the config inside rebuilds the exact network, so a
checkpoint cannot be loaded into a mismatched architecture by accident.

Pretrained EfficientAT weights enter only through :func:`build_model` (a fresh model); a checkpoint carries
its own weights, so :func:`load_checkpoint` never reads the pretrained file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from acula.training.nets.efficientat import (
    DEFAULT_WEIGHTS,
    MobileNetConfig,
    MobileNetEncoder,
    load_pretrained,
)
from acula.training.nets.model import AculaAudioModel, ModelConfig

KeyMap = Callable[[str], str | None] | Mapping[str, str]


def build_model(config: ModelConfig, load_weights: bool = True) -> AculaAudioModel:
    """A fresh model for ``config``: random, but for the pretrained encoder weights the config names.

    ``load_weights=False`` skips reading ``config.mobilenet.pretrained`` (when a state dict replaces
    everything right after, e.g. a checkpoint).
    """
    model = AculaAudioModel(config)
    weights = config.mobilenet.pretrained
    if load_weights and config.encoder == "mobilenet" and weights is not None:
        assert isinstance(model.encoder, MobileNetEncoder)
        load_pretrained(model.encoder, weights, config.mobilenet.pretrained_sha256)
    return model


def pretrained_mobilenet(
    pooling: Literal["mean", "freq"] = "freq",
    joint_dim: int = 256,
    weights: Path = DEFAULT_WEIGHTS,
    **config: Any,
) -> AculaAudioModel:
    """EfficientAT mn04 (AudioSet) as an ``AculaAudioModel``: its front-end, its weights, a new joint head.

    The embedding is the pooled feature map itself (384-d ``mean``, 1,536-d ``freq``); the joint projection,
    the SSL decoder and ``mask_value`` start random. ``config`` sets other ``ModelConfig`` fields (e.g.
    ``text_dim``). Returned in training mode, like :func:`build_model`; call ``.eval()`` to embed.
    """
    mobilenet = MobileNetConfig(pooling=pooling, pretrained=Path(weights))
    return build_model(ModelConfig(encoder="mobilenet", mobilenet=mobilenet, joint_dim=joint_dim, **config))


def save_checkpoint(path: Path, model: AculaAudioModel, **extra: Any) -> Path:
    """Write ``{"config", "model", **extra}``; extra holds only tensors, numbers, strings, lists, dicts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    payload = {"config": model.config.model_dump(mode="json"), "model": model.state_dict(), **extra}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated checkpoint
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "config" not in payload or "model" not in payload:
        raise ValueError(f"{path} is not an acula checkpoint (expected keys 'config' and 'model')")
    return payload


def load_checkpoint(path: Path) -> AculaAudioModel:
    """Rebuild the model from the config stored in the checkpoint and load its weights (strict)."""
    payload = read_checkpoint(path)
    model = build_model(ModelConfig.model_validate(payload["config"]), load_weights=False)
    model.load_state_dict(payload["model"])
    return model.eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    payload = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_state_dict"):  # common wrappers (ours, Lightning, OPERA)
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}


def load_external_weights(
    model: torch.nn.Module, path: Path, key_map: KeyMap | None = None, verbose: bool = True
) -> tuple[list[str], list[str]]:
    """Load a foreign ``.pt``/``.pth`` state dict or ``.safetensors`` file into ``model``, non-strictly.

    ``key_map`` renames source keys to ours: a dict (missing entries kept as they are) or a function
    returning the new name, or None to drop the key. Tensors whose shape differs from ours are not loaded
    and are reported as unexpected. Returns ``(missing, unexpected)`` and prints both when ``verbose``.
    """
    source = _read_state_dict(path)
    if key_map is not None:
        mapped = {}
        for key, value in source.items():
            new = key_map.get(key, key) if isinstance(key_map, Mapping) else key_map(key)
            if new is not None:
                mapped[new] = value
        source = mapped
    own = model.state_dict()
    shape_mismatch = [
        f"{k} (theirs {tuple(v.shape)}, ours {tuple(own[k].shape)})"
        for k, v in source.items()
        if k in own and own[k].shape != v.shape
    ]
    loadable = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    result = model.load_state_dict(loadable, strict=False)
    missing = sorted(result.missing_keys)
    unexpected = sorted(k for k in source if k not in own) + shape_mismatch
    if verbose:
        print(f"loaded {len(loadable)}/{len(own)} tensors from {path}")
        print(f"missing ({len(missing)}): {missing}")
        print(f"unexpected ({len(unexpected)}): {unexpected}")
    return missing, unexpected
