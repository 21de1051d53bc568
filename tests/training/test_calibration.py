"""Temperature scaling and calibration error on synthetic answers whose calibration is known."""

from __future__ import annotations

import numpy as np
import pytest

from acula.training.bench.metrics import expected_calibration_error, reliability
from acula.training.calibration import fit_temperature
from acula.training.probes import fit_linear_probe


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("true_temperature", [0.5, 3.0])
def test_fit_temperature_recovers_the_temperature_that_generated_the_labels(true_temperature: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=20000)
    y = (rng.random(len(logits)) < _sigmoid(logits / true_temperature)).astype(int)
    assert fit_temperature("binary", logits, y)[0] == pytest.approx(true_temperature, rel=0.1)


def test_multiclass_and_multilabel_temperatures_have_the_stored_shapes() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=4.0, size=(3000, 4))
    p = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(1, keepdims=True)
    y = np.asarray([rng.choice(4, p=row) for row in p])
    t = fit_temperature("multiclass", logits, y)
    assert t.shape == (1,) and t[0] == pytest.approx(2.0, rel=0.15)
    labels = (rng.random((3000, 3)) < _sigmoid(logits[:, :3] / np.asarray([0.5, 1.0, 4.0]))).astype(int)
    t = fit_temperature("multilabel", logits[:, :3], labels)
    assert t.shape == (3,) and t == pytest.approx([0.5, 1.0, 4.0], rel=0.2)


def test_expected_calibration_error_is_zero_for_honest_and_large_for_overconfident_answers() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(50000)
    y = (rng.random(len(p)) < p).astype(int)
    assert expected_calibration_error("binary", y, p) < 0.01
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error("binary", y, overconfident) > 0.2
    confidence, accuracy, count = reliability("binary", y, p)
    assert count.sum() == len(p) and np.nanmax(np.abs(confidence - accuracy)) < 0.03


def test_probe_is_calibrated_on_held_out_folds_and_keeps_its_ranking() -> None:
    """Overlapping classes and weak regularisation: the raw probe is over-confident on new subjects; the
    temperature (fitted out-of-fold) brings its test-side ECE down without changing any ranking."""
    rng = np.random.default_rng(3)

    def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return rng.normal(size=(n, 60)) + 0.25 * y[:, None], y

    x, y = blobs(300)
    x_test, y_test = blobs(4000)
    fit = fit_linear_probe(x, y, np.arange(300) // 3, "binary", 2)
    assert fit.temperature is not None and fit.temperature.shape == (1,) and fit.calibrated_on == 300
    raw, calibrated = fit.uncalibrated().scores(x_test), fit.scores(x_test)
    assert np.array_equal(np.argsort(raw), np.argsort(calibrated))
    assert expected_calibration_error("binary", y_test, calibrated) < expected_calibration_error(
        "binary", y_test, raw
    )
    regression = fit_linear_probe(x, x[:, 0], np.arange(300) // 3, "regression", 1)
    assert regression.temperature is None
