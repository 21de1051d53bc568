"""Probes on frozen features: the fast standardised linear probe, and the shared validation split.

Two probes score every (encoder, task, split):

- ``logistic``: standardise with training-side statistics, then scikit-learn logistic regression with balanced
  class weights (one per label for multilabel tasks), or ridge regression for regression tasks. Its one
  hyperparameter (C or alpha) is chosen on a subject-grouped validation split of the probe's training side and
  the probe is refitted on all of it. Deterministic: one run, no seeds.
- ``opera``: the OPERA benchmark's linear probe (:mod:`training.bench.opera`), five seeds.

The validation split is grouped by subject because recordings of one patient are near-duplicates: a
recording-level split would pick the hyperparameter that memorises patients best.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from acula.training.bench.metrics import TaskKind, higher_is_better, score_task

ProbeName = Literal["logistic", "opera"]
LOGISTIC_C = (0.001, 0.01, 0.1, 1.0)
RIDGE_ALPHA = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


@dataclass
class ProbeOutput:
    """Scores on the evaluated rows (layout as in :mod:`training.bench.metrics`) and how they were made."""

    scores: np.ndarray
    info: dict[str, object] = field(default_factory=dict)


def _stratum(y: np.ndarray, kind: TaskKind) -> np.ndarray:
    """A class per row to stratify on: the label, the label combination (multilabel), a quantile bin."""
    if kind in ("binary", "multiclass"):
        return np.asarray(y, dtype=int)
    if kind == "multilabel":
        return np.asarray(["".join(str(int(v)) for v in row) for row in np.asarray(y)])
    edges = np.quantile(y, [0.25, 0.5, 0.75])
    return np.digitize(np.asarray(y, dtype=np.float64), edges)


def grouped_validation_split(
    y: np.ndarray, groups: np.ndarray, kind: TaskKind, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit, validation)``: about ``fraction`` of the SUBJECTS held out, stratified by label.

    Uses one fold of ``StratifiedGroupKFold(round(1 / fraction))``, so no subject is on both sides and each
    class keeps roughly its share. Falls back to a plain group split when stratification is impossible.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    n_splits = max(2, round(1 / fraction))
    rows = np.arange(len(y))
    groups = np.asarray(groups)
    if len(np.unique(groups)) < n_splits:
        raise ValueError(f"need at least {n_splits} subjects for a grouped validation split")
    strata = _stratum(np.asarray(y), kind)
    try:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        fit, val = next(splitter.split(rows, strata, groups))
    except ValueError:
        splitter_plain = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        fit, val = next(splitter_plain.split(rows, strata, groups))
    return fit, val


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training-side mean and scale; constant columns get scale 1 so they stay zero."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale < 1e-8, 1.0, scale)


def _logistic_scores(x_fit, y_fit, x_eval, kind: TaskKind, c: float, num_outputs: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    def one(x, y):  # binary or multiclass on one target column
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        model.fit(x, y)
        proba = model.predict_proba(x_eval)
        full = np.zeros((len(x_eval), num_outputs if kind == "multiclass" else 2))
        full[:, model.classes_.astype(int)] = proba  # a class absent from training gets probability 0
        return full

    if kind == "binary":
        return one(x_fit, y_fit)[:, 1]
    if kind == "multiclass":
        return one(x_fit, y_fit)
    columns = []
    for j in range(num_outputs):  # multilabel: one binary probe per label
        target = np.asarray(y_fit)[:, j]
        columns.append(one(x_fit, target)[:, 1] if len(np.unique(target)) > 1 else np.full(len(x_eval), 0.5))
    return np.stack(columns, axis=1)


def _ridge_scores(x_fit, y_fit, x_eval, alpha: float) -> np.ndarray:
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha).fit(x_fit, np.asarray(y_fit, dtype=np.float64)).predict(x_eval)


def _select(
    candidates: tuple[float, ...],
    fit_score: Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    kind: TaskKind,
) -> tuple[float, dict[str, float]]:
    """The candidate with the best grouped-validation metric (ties: the first, i.e. the most regularised)."""
    fit_rows, val_rows = grouped_validation_split(y, groups, kind)
    results = {}
    for value in candidates:
        scores = fit_score(x[fit_rows], y[fit_rows], x[val_rows], value)
        results[str(value)] = score_task(kind, y[val_rows], scores)
    sign = 1.0 if higher_is_better(kind) else -1.0
    finite = {k: v for k, v in results.items() if not np.isnan(v)}
    best = max(finite, key=lambda k: sign * finite[k]) if finite else str(candidates[len(candidates) // 2])
    return float(best), results


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    groups_train: np.ndarray,
    x_eval: np.ndarray,
    kind: TaskKind,
    num_outputs: int,
) -> ProbeOutput:
    """Standardised logistic (classification) or ridge (regression) probe; hyperparameter on grouped val."""
    mean, scale = standardiser(np.asarray(x_train, dtype=np.float64))
    z_train = (x_train - mean) / scale
    z_eval = (x_eval - mean) / scale
    y_train = np.asarray(y_train)
    if kind == "regression":
        target_mean, target_scale = float(y_train.mean()), float(y_train.std() or 1.0)

        def fit_score(xf, yf, xe, alpha):
            return (
                _ridge_scores(xf, (yf - target_mean) / target_scale, xe, alpha) * target_scale + target_mean
            )

        best, val = _select(RIDGE_ALPHA, fit_score, z_train, y_train, groups_train, kind)
        scores = fit_score(z_train, y_train, z_eval, best)
        return ProbeOutput(scores, {"probe": "ridge", "alpha": best, "validation": val})

    def fit_score(xf, yf, xe, c):
        return _logistic_scores(xf, yf, xe, kind, c, num_outputs)

    best, val = _select(LOGISTIC_C, fit_score, z_train, y_train, groups_train, kind)
    scores = fit_score(z_train, y_train, z_eval, best)
    return ProbeOutput(scores, {"probe": "logistic", "C": best, "validation": val})
