"""The audio encoder to ONNX, and the parity check that refuses an export which computes something else.

The graph is exported with the dynamo exporter (opset 18) as one self-contained file: the log-mel front-end
is inside (a conv1d DFT basis), so the service feeds raw waveforms and cannot drift from training's
preprocessing. Batch and length are dynamic. An exported graph is only written into a bundle after
onnxruntime and torch agree on real recordings of several lengths and batch sizes; the service relies on
that promise, so a larger difference is an error, never a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from acula.service.bundle import EncoderSpec, TensorSpec
from acula.training.data.records import Recording

if TYPE_CHECKING:
    from acula.training.nets.model import AculaAudioModel

PARITY_TOLERANCE = 1e-4
INPUT_NAME = "waveform"
OUTPUT_NAMES = ("embedding", "joint")


class ExportError(RuntimeError):
    """The export cannot produce a bundle that keeps its promises; the message says which and why."""


class _ForwardOnly(nn.Module):
    """Only ``forward`` (waveform -> embedding, joint) goes into the graph: no SSL decoder, no text head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, joint = self.model(waveform)
        return embedding, joint


def export_encoder(
    model: nn.Module, path: Path, window_samples: int, min_samples: int, max_samples: int
) -> Path:
    """Write ``model.forward`` as ONNX: ``waveform (batch, samples)`` -> ``embedding``, ``joint``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    samples = torch.export.Dim("samples", min=min_samples, max=max_samples)
    example = (0.1 * torch.randn(2, window_samples, generator=torch.Generator().manual_seed(0)),)
    try:
        torch.onnx.export(
            _ForwardOnly(model).eval(),
            example,
            str(path),
            dynamo=True,
            opset_version=18,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"waveform": {0: batch, 1: samples}},
        )
    except Exception as exc:  # the exporter raises many types; callers need one
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
    stray = [p.name for p in path.parent.glob(path.name + ".data")]
    if stray:
        raise ExportError(f"export wrote external data {stray}: the bundle must be one self-contained file")
    return path


def encoder_spec(model: AculaAudioModel) -> EncoderSpec:
    """The manifest's description of the graph :func:`export_encoder` writes for ``model``."""
    return EncoderSpec(
        input=TensorSpec(name=INPUT_NAME, shape=["batch", "samples"]),
        embedding=TensorSpec(name=OUTPUT_NAMES[0], shape=["batch", model.embedding_dim]),
        joint=TensorSpec(name=OUTPUT_NAMES[1], shape=["batch", model.joint_dim]),
    )


@dataclass(frozen=True)
class ParityResult:
    """Largest absolute difference between torch and onnxruntime, over every case that was run."""

    max_abs_diff: float
    cases: list[tuple[int, int]]  # (batch, samples) per case
    per_output: dict[str, float]


def parity_recordings(
    records: Sequence[Recording], load: Callable[[Recording], np.ndarray], count: int = 6
) -> tuple[list[Recording], list[np.ndarray]]:
    """Real training-side recordings, one per native sample rate (then round-robin over rates up to
    ``count``): a 2 kHz heart sound resampled to the front-end's rate has an empty upper half-spectrum, a
    16 kHz cough a full one, so the parity cases cover what the service will feed the encoder."""
    by_rate: dict[int, list[Recording]] = {}
    for record in records:
        if record.is_training_side:
            by_rate.setdefault(record.native_rate or 0, []).append(record)
    queues = [items[len(items) // 2 :] + items[: len(items) // 2] for _, items in sorted(by_rate.items())]
    chosen: list[Recording] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen, [load(r) for r in chosen]


def parity_cases(recordings: list[np.ndarray], window: int, min_samples: int) -> list[np.ndarray]:
    """Batches cut from real recordings: one window, a short clip, a long clip, and a batch of windows.

    Short and long clips exercise the dynamic length; the batch of windows is what the service really runs.
    """
    if not recordings:
        raise ExportError("parity needs at least one real recording")
    cases: list[np.ndarray] = []

    def take(samples: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
        out = np.zeros(length, dtype=np.float32)
        chunk = samples[offset : offset + length]
        out[: len(chunk)] = chunk
        return out

    first = recordings[0]
    cases.append(take(first, window)[None])  # (1, window)
    cases.append(take(first, max(min_samples, window // 3))[None])  # (1, short)
    cases.append(take(first, window * 5 // 2)[None])  # (1, long): longer than any window
    windows = [take(rec, window, offset=min(len(rec) // 3, max(0, len(rec) - window))) for rec in recordings]
    cases.append(np.stack(windows))  # (n, window): several recordings in one batch
    if len(recordings) >= 3:
        cases.append(np.stack([take(rec, window + window // 2) for rec in recordings[:3]]))  # (3, 1.5 win)
    return cases


def check_parity(
    model: nn.Module, onnx_path: Path, cases: list[np.ndarray], tolerance: float = PARITY_TOLERANCE
) -> ParityResult:
    """Run every case through torch and onnxruntime; raise :class:`ExportError` past ``tolerance``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    model = model.eval()
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    shapes = []
    for batch in cases:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        with torch.no_grad():
            want = [t.numpy() for t in model(torch.from_numpy(batch))]
        for name, g, w in zip(OUTPUT_NAMES, got, want, strict=True):
            if g.shape != w.shape:
                raise ExportError(f"parity: {name} has shape {g.shape} in ONNX but {w.shape} in torch")
            if not np.all(np.isfinite(g)):
                raise ExportError(f"parity: ONNX {name} is not finite for input shape {batch.shape}")
            worst[name] = max(worst[name], float(np.abs(g - w).max()))
        shapes.append(tuple(batch.shape))
    result = ParityResult(max(worst.values()), shapes, worst)
    if result.max_abs_diff > tolerance:
        raise ExportError(
            f"ONNX export does not match torch: max |onnxruntime - torch| = {result.max_abs_diff:.2e} "
            f"> {tolerance:.0e} (per output {worst}, input shapes {shapes}); the bundle was not written"
        )
    return result
