"""Export a waveform-in module the way the bundle exporter does, and open it in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def export_and_open(
    module: torch.nn.Module,
    path: Path,
    output_names: list[str],
    min_samples: int = 800,
    max_samples: int = 2_000_000,
) -> Any:
    """Dynamo export (opset 18, one file) with dynamic batch and length; returns an ``InferenceSession``."""
    import onnxruntime as ort

    batch = torch.export.Dim("batch", min=1, max=64)
    samples = torch.export.Dim("samples", min=min_samples, max=max_samples)
    torch.onnx.export(
        module.eval(),
        (torch.randn(2, 16000),),
        str(path),
        dynamo=True,
        opset_version=18,
        external_data=False,
        input_names=["waveform"],
        output_names=output_names,
        dynamic_shapes={"waveform": {0: batch, 1: samples}},
    )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
