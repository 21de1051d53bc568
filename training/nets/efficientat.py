"""EfficientAT "mn" MobileNetV3 audio encoder, with a strict loader for its AudioSet weights.

Our own implementation of the network described in ``../shared/weights/efficientat-mn04-as/README.md``
(Schmid, Koutini, Widmer, ICASSP 2023; github fschmid56/EfficientAT, MIT): torchvision's
MobileNetV3-Large layout of 15 inverted-residual blocks at a width multiplier (0.4 for ``mn04``), one input
channel, channel-only squeeze-excitation written as two ``Linear`` layers, and every stride of 2 kept, so a
log-mel ``(B, 1, 128, T)`` becomes a feature map ``(B, 384, 4, T / 32)``.

It starts from weights that already know 2 million AudioSet clips, which is worth more than anything we can
train from scratch on our few hours of auscultation audio. The AudioSet classifier stays in the module: it is
not on the embedding path, but training reads its logits to distil from a frozen copy, so that alignment does
not wash out what pretraining learnt.

The weights keep their meaning only with the front-end they were trained with; :func:`efficientat_frontend`
is that front-end, and ``ModelConfig`` uses it for this encoder unless told otherwise.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from acula.training.nets.frontend import FrontendConfig

#: The EfficientAT ``mn04_as`` state dict (AudioSet mAP 0.432), beside the repository, never copied into it.
DEFAULT_WEIGHTS = Path("../shared/weights/efficientat-mn04-as/mn04_as_mAP_432.pt")
#: SHA-256 of ``mn04_as_mAP_432.pt`` as published in the weights folder's README.
MN04_AS_SHA256 = "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"
#: The licences that must travel with anything derived from the weights (bundle provenance, model card).
WEIGHT_LICENCES = ("LICENSE.EfficientAT", "LICENSE.redistribution")
WEIGHTS_NAME = "EfficientAT mn04_as (MobileNetV3 'mn', width 0.4, AudioSet mAP 0.432)"
WEIGHTS_SOURCE = (
    "Schmid, Koutini, Widmer, 'Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge "
    "Distillation', ICASSP 2023, github fschmid56/EfficientAT (MIT, (c) 2022 Florian Schmid); the file as "
    "redistributed by github nikih94/swch-audio-classification (MIT, (c) 2025 Niki Hrovatin)"
)

BN_EPS = 1e-3  # EfficientAT's BatchNorm settings; eps changes every eval-mode output, so it must match
BN_MOMENTUM = 0.01


def efficientat_frontend() -> FrontendConfig:
    """The log-mel EfficientAT's AudioSet models were trained with (its eval mode, no augmentation)."""
    return FrontendConfig(
        sample_rate=32000,
        n_fft=1024,
        win_length=800,
        window="hann_symmetric",
        hop_length=320,
        pad_mode="reflect",
        preemphasis=0.97,
        n_mels=128,
        mel_scale="kaldi",
        f_min=0.0,
        f_max=15000.0,
        eps=1e-5,
        normalise="fixed",
        fixed_mean=-4.5,  # (logmel + 4.5) / 5
        fixed_std=5.0,
    )


class MobileNetConfig(BaseModel):
    """The EfficientAT encoder; stored in the checkpoint with the rest of ``ModelConfig``."""

    model_config = ConfigDict(extra="forbid")

    width_mult: float = Field(
        0.4, gt=0, description="Channel multiplier of MobileNetV3-Large (0.4 = mn04, what the weights need)."
    )
    pooling: Literal["mean", "freq"] = Field(
        "freq",
        description="Embedding: mean over frequency and time (the AudioSet embedding, 384-d), or mean over "
        "time with the frequency bands kept (4 x 384 = 1,536-d: crackles and wheezes live in some bands).",
    )
    se_reduction: int = Field(4, ge=1, description="Squeeze-excitation bottleneck: channels / se_reduction.")
    num_classes: int = Field(527, ge=1, description="AudioSet classes of the classifier (for distillation).")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout inside the AudioSet classifier.")
    pretrained: Path | None = Field(
        None,
        description="EfficientAT state dict the backbone starts from (loaded by build_model, never by "
        "load_checkpoint, whose weights replace it); None: random initialisation.",
    )
    pretrained_sha256: str | None = Field(
        MN04_AS_SHA256, description="Expected SHA-256 of the pretrained file; None skips the check."
    )


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10% (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class BlockSpec(NamedTuple):
    """One inverted-residual block of MobileNetV3-Large, channels before the width multiplier."""

    cin: int
    kernel: int
    expanded: int
    cout: int
    se: bool
    hardswish: bool  # else ReLU
    stride: int


# Table 1 of "Searching for MobileNetV3" (torchvision's mobilenet_v3_large), all four strides of 2 kept.
LARGE_BLOCKS = (
    BlockSpec(16, 3, 16, 16, False, False, 1),
    BlockSpec(16, 3, 64, 24, False, False, 2),
    BlockSpec(24, 3, 72, 24, False, False, 1),
    BlockSpec(24, 5, 72, 40, True, False, 2),
    BlockSpec(40, 5, 120, 40, True, False, 1),
    BlockSpec(40, 5, 120, 40, True, False, 1),
    BlockSpec(40, 3, 240, 80, False, True, 2),
    BlockSpec(80, 3, 200, 80, False, True, 1),
    BlockSpec(80, 3, 184, 80, False, True, 1),
    BlockSpec(80, 3, 184, 80, False, True, 1),
    BlockSpec(80, 3, 480, 112, True, True, 1),
    BlockSpec(112, 3, 672, 112, True, True, 1),
    BlockSpec(112, 5, 672, 160, True, True, 2),
    BlockSpec(160, 5, 960, 160, True, True, 1),
    BlockSpec(160, 5, 960, 160, True, True, 1),
)
STEM_CHANNELS = 16  # before the width multiplier
FINAL_EXPANSION = 6  # the last 1x1 conv widens the last block's output six-fold
CLASSIFIER_HIDDEN = 1280  # before the width multiplier


class ConvNormAct(nn.Sequential):
    """Conv (no bias), BatchNorm, activation; ``padding = kernel // 2``: stride 2 gives ``ceil(n / 2)``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.Hardswish,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        layers["norm"] = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        if activation is not None:
            layers["act"] = activation()
        super().__init__(layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: mean over frequency and time -> bottleneck MLP -> sigmoid gate per channel.

    EfficientAT's "mn" models gate channels only (no frequency or time excitation), with ReLU and a plain
    sigmoid, not MobileNetV3's hard sigmoid.
    """

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3))  # (B, C, F, T) -> (B, C)
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(scale))))
        return x * scale[:, :, None, None]


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise k x k (carries the stride) -> squeeze-excitation -> 1x1 project (linear).

    ``(B, Cin, F, T) -> (B, Cout, F / s, T / s)``, plus the input when shape allows (stride 1, Cin = Cout).
    The expansion is left out when it would not widen (the first block), as in MobileNetV3.
    """

    def __init__(self, spec: BlockSpec, width_mult: float, se_reduction: int) -> None:
        super().__init__()
        cin, cout = make_divisible(spec.cin * width_mult), make_divisible(spec.cout * width_mult)
        hidden = make_divisible(spec.expanded * width_mult)
        act = nn.Hardswish if spec.hardswish else nn.ReLU
        self.expand = ConvNormAct(cin, hidden, 1, activation=act) if hidden != cin else None
        self.depthwise = ConvNormAct(hidden, hidden, spec.kernel, spec.stride, groups=hidden, activation=act)
        self.se = SqueezeExcitation(hidden, make_divisible(hidden // se_reduction)) if spec.se else None
        self.project = ConvNormAct(hidden, cout, 1, activation=None)
        self.residual = spec.stride == 1 and cin == cout

    def parts(self) -> list[tuple[str, nn.Module]]:
        """The layers in the order they run (the order of EfficientAT's ``block.N`` indices)."""
        named: list[tuple[str, nn.Module | None]] = [
            ("expand", self.expand),
            ("depthwise", self.depthwise),
            ("se", self.se),
            ("project", self.project),
        ]
        return [(name, m) for name, m in named if m is not None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x) if self.expand is not None else x  # (B, Cin, F, T) -> (B, H, F, T)
        out = self.depthwise(out)  # (B, H, F, T) -> (B, H, F / s, T / s)
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)  # (B, H, F / s, T / s) -> (B, Cout, F / s, T / s)
        return out + x if self.residual else out


class AudioSetClassifier(nn.Module):
    """Pooled features ``(B, C)`` -> AudioSet logits ``(B, 527)``: Linear, Hardswish, Dropout, Linear."""

    def __init__(self, channels: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(channels, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(nn.functional.hardswish(self.hidden(pooled))))


class MobileNetEncoder(nn.Module):
    """``(B, 1, F, T)`` log-mel -> feature map ``(B, C, F / 32, T / 32)`` -> embedding ``(B, D)``.

    ``C = 384`` at width 0.4; ``D = C`` with pooling ``mean``, ``C x F / 32`` with ``freq``. Strides round up
    (``ceil``) as the padded convolutions do, so a clip of 250 frames gives 8 time steps.

    Fits ``AculaAudioModel``'s encoder contract: ``grid`` (the masked-spectrogram input), ``forward``
    (the embedding), ``patch``, ``bands``, ``grid_channels``; adds ``classify`` and ``audioset`` for the
    AudioSet logits.
    """

    def __init__(self, config: MobileNetConfig, n_mels: int) -> None:
        super().__init__()
        self.config = config
        width = config.width_mult
        stride = 2 * 2 ** sum(spec.stride == 2 for spec in LARGE_BLOCKS)  # the stem halves too
        if n_mels % stride:
            raise ValueError(f"n_mels={n_mels} must be divisible by the encoder's stride {stride}")
        self.patch = (stride, stride)  # one feature-map cell = one 32 x 32 patch of the log-mel
        self.bands = n_mels // stride
        last = make_divisible(LARGE_BLOCKS[-1].cout * width)
        self.grid_channels = FINAL_EXPANSION * last
        self.embedding_dim = self.grid_channels * (self.bands if config.pooling == "freq" else 1)

        self.stem = ConvNormAct(1, make_divisible(STEM_CHANNELS * width), 3, stride=2)
        self.blocks = nn.ModuleList(
            InvertedResidual(spec, width, config.se_reduction) for spec in LARGE_BLOCKS
        )
        self.final_conv = ConvNormAct(last, self.grid_channels, 1)
        self.classifier = AudioSetClassifier(
            self.grid_channels, make_divisible(CLASSIFIER_HIDDEN * width), config.num_classes, config.dropout
        )
        # Replaces masked patches of the input during SSL (a learnable value, not zero: zero is a real level).
        self.mask_value = nn.Parameter(torch.zeros(1))
        self._init_weights()

    def _init_weights(self) -> None:
        """MobileNetV3's initialisation, for a random start (pretrained weights overwrite all of it)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def feature_map(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 1, F, T)`` -> ``(B, C, ceil(F / 32), ceil(T / 32))``: the network but its classifier."""
        x = self.stem(spec)  # (B, 1, F, T) -> (B, 8, F / 2, T / 2)
        for block in self.blocks:
            x = block(x)  # -> (B, 64, F / 32, T / 32) after the last block
        return self.final_conv(x)  # (B, 64, F / 32, T / 32) -> (B, C, F / 32, T / 32)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """Feature map -> embedding, as ``config.pooling`` says."""
        if self.config.pooling == "mean":
            return fmap.mean(dim=(2, 3))  # (B, C, F', T') -> (B, C)
        if fmap.shape[2] != self.bands:
            raise ValueError(f"expected {self.bands} frequency bands, got a feature map {tuple(fmap.shape)}")
        # (B, C, F', T') -> (B, F', C) -> (B, F' * C): band after band, each a 384-d AudioSet-like vector
        return fmap.mean(dim=3).transpose(1, 2).flatten(1)

    def classify(self, fmap: torch.Tensor) -> torch.Tensor:
        """Feature map ``(B, C, F', T')`` -> AudioSet logits ``(B, num_classes)`` (mean over F', T' first)."""
        return self.classifier(fmap.mean(dim=(2, 3)))

    def audioset(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, F, T)`` -> (logits ``(B, 527)``, pooled ``(B, C)``): EfficientAT's own two outputs."""
        fmap = self.feature_map(spec)
        return self.classify(fmap), fmap.mean(dim=(2, 3))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(spec))  # (B, 1, F, T) -> (B, C, F', T') -> (B, D)

    def grid(self, spec: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 1, F, T)`` -> ``(B, C, Fp, Tp)``, one cell per whole 32 x 32 patch.

        The frames after the last whole patch are dropped first (``patchify`` drops them from the target),
        so every stride divides exactly and the grid lines up with the patches. ``patch_mask``
        ``(B, Fp, Tp)`` bool marks the patches replaced by ``mask_value`` before the network sees them.
        """
        pf, pt = self.patch
        fp, tp = spec.shape[2] // pf, spec.shape[3] // pt
        spec = spec[:, :, : fp * pf, : tp * pt]  # whole patches only
        if patch_mask is not None:
            pixels = patch_mask.repeat_interleave(pf, 1).repeat_interleave(pt, 2)  # (B, Fp * pf, Tp * pt)
            spec = torch.where(pixels.unsqueeze(1), self.mask_value.to(spec.dtype), spec)
        return self.feature_map(spec)


def mobilenet_embedding_dim(config: MobileNetConfig, n_mels: int) -> int:
    """The embedding width ``MobileNetEncoder(config, n_mels)`` will have, without building it."""
    channels = FINAL_EXPANSION * make_divisible(LARGE_BLOCKS[-1].cout * config.width_mult)
    return channels * (n_mels // 32 if config.pooling == "freq" else 1)


# ---------------------------------------------------------------------------------------------------------
# Strict loading of EfficientAT's state dict


NOT_PRETRAINED = frozenset({"mask_value"})  # ours only: learnt in masked-spectrogram training


def source_names(encoder: MobileNetEncoder) -> dict[str, str]:
    """Our module name -> EfficientAT's, for every layer that holds weights.

    EfficientAT numbers its layers: ``features.0`` the stem, ``features.1..15`` the blocks (``block.N``
    counting only the parts present; a conv-norm-act is ``.0`` conv and ``.1`` norm, the squeeze-excitation
    ``conc_se_layers.0``), ``features.16`` the final conv, ``classifier.2`` / ``classifier.5`` the linears
    (pooling, flatten, activation and dropout take indices 0, 1, 3, 4 but hold no weights).
    """

    def conv_norm(ours: str, theirs: str) -> dict[str, str]:
        return {f"{ours}.conv": f"{theirs}.0", f"{ours}.norm": f"{theirs}.1"}

    names = conv_norm("stem", "features.0")
    for i, block in enumerate(encoder.blocks):
        assert isinstance(block, InvertedResidual)
        for j, (part, _) in enumerate(block.parts()):
            ours, theirs = f"blocks.{i}.{part}", f"features.{i + 1}.block.{j}"
            if part == "se":
                names[f"{ours}.fc1"] = f"{theirs}.conc_se_layers.0.fc1"
                names[f"{ours}.fc2"] = f"{theirs}.conc_se_layers.0.fc2"
            else:
                names.update(conv_norm(ours, theirs))
    names.update(conv_norm("final_conv", f"features.{len(encoder.blocks) + 1}"))
    names.update({"classifier.hidden": "classifier.2", "classifier.out": "classifier.5"})
    return names


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_pretrained(encoder: MobileNetEncoder, path: Path, sha256: str | None = MN04_AS_SHA256) -> None:
    """Load EfficientAT's state dict into ``encoder``, strictly, or raise naming what does not fit.

    Every source tensor must land on one of ours with the same shape, and every tensor of ours but
    ``mask_value`` must come from the source (BatchNorm running statistics and ``num_batches_tracked``
    included). The file is read with ``weights_only=True`` (no pickle execution) after its SHA-256 is checked.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"EfficientAT weights {path} not found: place the shared weights folder beside the repository"
        )
    if sha256 is not None and (actual := file_sha256(path)) != sha256:
        raise ValueError(f"{path} has SHA-256 {actual}, expected {sha256}: not the published weights")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict) or not all(isinstance(v, torch.Tensor) for v in source.values()):
        raise ValueError(f"{path} is not a plain state dict of tensors")
    modules = source_names(encoder)
    own = encoder.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    unmapped, absent, shapes = [], [], []
    for key, tensor in own.items():
        if key in NOT_PRETRAINED:
            loaded[key] = tensor
            continue
        module, _, leaf = key.rpartition(".")
        if module not in modules:
            unmapped.append(key)
            continue
        theirs = f"{modules[module]}.{leaf}"
        if theirs not in source:
            absent.append(f"{key} <- {theirs}")
        elif source[theirs].shape != tensor.shape:
            shapes.append(f"{key} {tuple(tensor.shape)} <- {theirs} {tuple(source[theirs].shape)}")
        else:
            loaded[key] = source[theirs]
            used.add(theirs)
    unused = sorted(set(source) - used)
    if unmapped or absent or shapes or unused:
        raise ValueError(
            f"{path} does not fit MobileNetEncoder(width_mult={encoder.config.width_mult}): "
            f"ours without a source {unmapped}, sources missing {absent}, shape mismatches {shapes}, "
            f"source tensors left over {unused}"
        )
    encoder.load_state_dict(loaded, strict=True)


def weights_provenance(config: MobileNetConfig) -> tuple[dict[str, object], list[Path]] | None:
    """What a bundle must say about the pretrained weights ``config`` names (the fields of the manifest's
    ``PretrainedProvenance`` but ``licence_files``), and the licence texts that must travel with it; None
    when the encoder starts from nothing."""
    if config.pretrained is None:
        return None
    weights = Path(config.pretrained)
    texts = [weights.parent / name for name in WEIGHT_LICENCES]
    missing = [str(path) for path in texts if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"licence texts of {weights.name} not found ({missing}): they travel with it")
    facts: dict[str, object] = {
        "name": WEIGHTS_NAME,
        "file": weights.name,
        "sha256": config.pretrained_sha256 or file_sha256(weights),
        "licence": "MIT",
        "source": WEIGHTS_SOURCE,
    }
    return facts, texts
