"""Calibration (temperature and shift) and its error, on synthetic answers whose calibration is known."""

from __future__ import annotations

import numpy as np
import pytest

from acula.training.bench.metrics import expected_calibration_error, reliability
from acula.training.calibration import fit_calibration
from acula.training.probes import fit_linear_probe


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize(("true_temperature", "true_shift"), [(0.5, 0.0), (3.0, 0.0), (1.5, -1.2)])
def test_fit_calibration_recovers_the_temperature_and_shift_that_generated_the_labels(
    true_temperature: float, true_shift: float
) -> None:
    """A shift is what a probe fitted with balanced class weights needs on data with another prior."""
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=20000)
    y = (rng.random(len(logits)) < _sigmoid(logits / true_temperature + true_shift)).astype(int)
    fitted = fit_calibration("binary", logits, y)
    assert fitted.temperature[0] == pytest.approx(true_temperature, rel=0.1)
    assert fitted.shift[0] == pytest.approx(true_shift, abs=0.1)


def test_multiclass_and_multilabel_calibrations_have_the_stored_shapes() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=4.0, size=(3000, 4))
    shift = np.asarray([0.0, 0.5, -0.5, 1.0])
    p = np.exp(logits / 2.0 + shift) / np.exp(logits / 2.0 + shift).sum(1, keepdims=True)
    y = np.asarray([rng.choice(4, p=row) for row in p])
    fitted = fit_calibration("multiclass", logits, y)
    assert fitted.temperature.shape == (1,) and fitted.temperature[0] == pytest.approx(2.0, rel=0.15)
    assert fitted.shift.shape == (4,) and fitted.shift == pytest.approx(shift, abs=0.25)
    labels = (rng.random((3000, 3)) < _sigmoid(logits[:, :3] / np.asarray([0.5, 1.0, 4.0]))).astype(int)
    fitted = fit_calibration("multilabel", logits[:, :3], labels)
    assert fitted.temperature.shape == fitted.shift.shape == (3,)
    assert fitted.temperature == pytest.approx([0.5, 1.0, 4.0], rel=0.2)


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


def test_a_balanced_probe_is_recentred_on_the_prior_it_will_meet() -> None:
    """Balanced class weights centre the raw probabilities on a 50 % prior; with one positive in five the
    calibrated probe must say about 20 % on average, and its error must drop (a temperature alone cannot
    move the centre, and made a probe worse on real data: docs/RESULTS.md)."""
    rng = np.random.default_rng(4)

    def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.2).astype(int)
        return rng.normal(size=(n, 20)) + 0.6 * y[:, None], y

    x, y = blobs(600)
    x_test, y_test = blobs(6000)
    fit = fit_linear_probe(x, y, np.arange(600) // 2, "binary", 2)
    raw, calibrated = fit.uncalibrated().scores(x_test), fit.scores(x_test)
    assert abs(raw.mean() - 0.2) > 0.1 and abs(calibrated.mean() - 0.2) < 0.05
    assert expected_calibration_error("binary", y_test, calibrated) < 0.5 * expected_calibration_error(
        "binary", y_test, raw
    )
    assert np.array_equal(np.argsort(raw), np.argsort(calibrated))
