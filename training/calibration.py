"""Calibration: a temperature and a shift per output that make a probe's probabilities honest.

A logistic probe ranks well, but its probabilities are off twice over: over- or under-confident (fixed by
dividing the logits by a temperature T, Guo et al. 2017), and centred on the wrong prior, because the probes
are fitted with balanced class weights, i.e. as if every class were equally common. A temperature alone
cannot move that centre and can make things worse (measured: docs/RESULTS.md), so each output also gets a
shift s: ``z / T + s`` (Platt scaling for a binary or multi-label output; bias-corrected temperature scaling
for a softmax, one T and a shift per class). Both are fitted to minimise the negative log-likelihood of
out-of-fold logits: a probe's logits on its own training rows are over-confident by construction, so
:mod:`training.probes` produces them by subject-grouped K-fold. The ranking of recordings by one class's
logit never changes.

The service divides the logits by the stored ``temperature``; the shift is folded into the stored bias
(``(x W + b) / T + s = (x W + b + s T) / T``), so a served probe needs no extra array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from acula.training.bench.metrics import TaskKind

LOG_T_RANGE = (np.log(0.05), np.log(20.0))  # temperatures outside this mean a broken fit, not calibration
SHIFT_RANGE = (-20.0, 20.0)


@dataclass(frozen=True)
class Calibrator:
    """``temperature`` ``(1,)`` (or ``(labels,)`` multi-label) and ``shift`` ``(outputs,)``."""

    temperature: np.ndarray
    shift: np.ndarray

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return logits / self.temperature + self.shift


def _binary_nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(z)`` against 0/1 ``y`` (stable for large |z|)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _softmax_nll(z: np.ndarray, y: np.ndarray) -> float:
    from scipy.special import log_softmax

    finite = np.maximum(z, -1e4)  # a class absent from a fold's fit has logit -inf
    return float(-np.mean(log_softmax(finite, axis=1)[np.arange(len(y)), y.astype(int)]))


def _minimise(nll: Callable[[float, np.ndarray], float], shifts: int) -> tuple[float, np.ndarray]:
    """``(T, shift)`` minimising ``nll(T, shift)``; starts from no calibration (T 1, shift 0)."""
    from scipy.optimize import minimize

    bounds = [LOG_T_RANGE] + [SHIFT_RANGE] * shifts
    result = minimize(
        lambda p: nll(float(np.exp(p[0])), p[1:]), np.zeros(1 + shifts), method="L-BFGS-B", bounds=bounds
    )
    return float(np.exp(result.x[0])), np.asarray(result.x[1:])


def fit_calibration(kind: TaskKind, logits: np.ndarray, y: np.ndarray) -> Calibrator:
    """The temperature(s) and shift(s) minimising held-out NLL.

    ``logits``: ``(n,)`` binary (the single sklearn row), ``(n, C)`` multiclass, ``(n, L)`` multilabel.
    """
    y = np.asarray(y)
    if kind == "binary":
        z = np.ravel(logits)
        t, s = _minimise(lambda t, s: _binary_nll(z / t + s[0], y), 1)
        return Calibrator(np.asarray([t]), s)
    if kind == "multiclass":
        # The softmax ignores a common shift, so the first class's stays 0 (identifiable, same fit).
        classes = logits.shape[1]

        def nll(t: float, s: np.ndarray) -> float:
            return _softmax_nll(logits / t + np.concatenate([[0.0], s]), y)

        t, s = _minimise(nll, classes - 1)
        return Calibrator(np.asarray([t]), np.concatenate([[0.0], s]))
    if kind == "multilabel":
        temperatures, shifts = [], []
        for j in range(logits.shape[1]):
            column, target = logits[:, j], y[:, j]

            def column_nll(t: float, s: np.ndarray, c: np.ndarray = column, v: np.ndarray = target) -> float:
                return _binary_nll(c / t + s[0], v)

            t, s = _minimise(column_nll, 1)
            temperatures.append(t)
            shifts.append(s[0])
        return Calibrator(np.asarray(temperatures), np.asarray(shifts))
    raise ValueError("a regression has no probabilities to calibrate")
