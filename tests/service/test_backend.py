"""The ONNX backend on real (tiny) encoders: failures become EngineError, NaN fails warm-up by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acula.service.backends.onnx import OnnxEncoder
from acula.service.bundle import BundleError, read_manifest
from acula.service.core.errors import EngineError
from tests.support.doubles import nan_encoder_bundle


def _encoder(bundle: Path) -> OnnxEncoder:
    manifest = read_manifest(bundle)
    return OnnxEncoder(bundle / manifest.encoder.file, manifest.encoder, provider="cpu")


def test_an_onnxruntime_failure_is_an_engine_error(tiny_bundle: Path) -> None:
    """What the service answers 503 engine_error for: here onnxruntime refuses an input of the wrong rank."""
    with pytest.raises(EngineError, match="failed on a batch"):
        _encoder(tiny_bundle).run(np.zeros((1, 2, 3), dtype=np.float32))


def test_warm_up_refuses_an_encoder_that_answers_nan(tiny_bundle: Path, tmp_path: Path) -> None:
    encoder = _encoder(nan_encoder_bundle(tiny_bundle, tmp_path / "nan"))
    with pytest.raises(BundleError, match="encoder.onnx: the embedding output holds NaN"):
        encoder.warm_up(16000, 2)
    _encoder(tiny_bundle).warm_up(16000, 2)  # the same bundle, unbroken, warms up
