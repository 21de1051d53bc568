"""Temperature scaling: one number (per label, for multilabel probes) that makes probabilities honest.

A logistic probe ranks well but its probabilities are often over- or under-confident, and a clinician reads
"0.9" as nine in ten. Dividing the logits by a temperature T fitted to minimise the negative log-likelihood
of held-out answers fixes the confidence without changing which class wins (Guo et al., 2017). The logits
it is fitted on must be out-of-fold: a probe's logits on its own training rows are over-confident by
construction, so :mod:`training.probes` produces them by subject-grouped K-fold.
"""

from __future__ import annotations

import numpy as np

from acula.training.bench.metrics import TaskKind

LOG_T_RANGE = (np.log(0.05), np.log(20.0))  # temperatures outside this mean a broken fit, not calibration


def _binary_nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(z)`` against 0/1 ``y`` (stable for large |z|)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _softmax_nll(z: np.ndarray, y: np.ndarray) -> float:
    from scipy.special import log_softmax

    finite = np.maximum(z, -1e4)  # a class absent from a fold's fit has logit -inf
    return float(-np.mean(log_softmax(finite, axis=1)[np.arange(len(y)), y.astype(int)]))


def _best_temperature(nll) -> float:
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda log_t: nll(np.exp(log_t)), bounds=LOG_T_RANGE, method="bounded")
    return float(np.exp(result.x))


def fit_temperature(kind: TaskKind, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The temperature(s) minimising held-out NLL: shape ``(1,)``, or ``(labels,)`` for multilabel.

    ``logits``: ``(n,)`` binary (the single sklearn row), ``(n, C)`` multiclass, ``(n, L)`` multilabel.
    """
    y = np.asarray(y)
    if kind == "binary":
        z = np.ravel(logits)
        return np.asarray([_best_temperature(lambda t: _binary_nll(z / t, y))])
    if kind == "multiclass":
        return np.asarray([_best_temperature(lambda t: _softmax_nll(logits / t, y))])
    if kind == "multilabel":
        temperatures = []
        for j in range(logits.shape[1]):
            column, target = logits[:, j], y[:, j]
            temperatures.append(_best_temperature(lambda t, c=column, v=target: _binary_nll(c / t, v)))
        return np.asarray(temperatures)
    raise ValueError("a regression has no probabilities to calibrate")
