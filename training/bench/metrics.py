"""Task metrics: one function per task kind, so every probe and every encoder is scored the same way.

Scores follow one layout per kind (see :data:`TaskKind`): binary ``(n,)`` probability of the positive class,
multiclass ``(n, C)`` class probabilities, multilabel ``(n, L)`` per-label probabilities, regression ``(n,)``
predictions. AUROC is undefined when the evaluated set holds one class only; that is reported as NaN rather
than silently skipped, so a table never shows a number computed on a degenerate set.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

TaskKind = Literal["binary", "multiclass", "multilabel", "regression"]


def binary_auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve; NaN when ``y`` holds one class only.

    Computed as the Mann-Whitney statistic on average ranks (ties count one half), which equals
    ``sklearn.metrics.roc_auc_score`` (a test holds them equal) at a fraction of its input-checking cost:
    the OPERA probe scores its validation set after every epoch, thousands of times per run.
    """
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def macro_auroc(y_onehot: np.ndarray, scores: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over the columns that have both classes present (NaN if none has)."""
    values = [binary_auroc(y_onehot[:, j], scores[:, j]) for j in range(y_onehot.shape[1])]
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def per_label_auroc(y_onehot: np.ndarray, scores: np.ndarray) -> list[float]:
    return [binary_auroc(y_onehot[:, j], scores[:, j]) for j in range(y_onehot.shape[1])]


def one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(y), num_classes), dtype=int)
    out[np.arange(len(y)), np.asarray(y, dtype=int)] = 1
    return out


def score_task(kind: TaskKind, y: np.ndarray, scores: np.ndarray) -> float:
    """The task's headline metric: AUROC (binary), macro AUROC (multiclass, multilabel), MAE (regression)."""
    if kind == "binary":
        return binary_auroc(y, scores)
    if kind == "multiclass":
        return macro_auroc(one_hot(y, scores.shape[1]), scores)
    if kind == "multilabel":
        return macro_auroc(np.asarray(y, dtype=int), scores)
    if kind == "regression":
        return float(np.mean(np.abs(np.asarray(y, dtype=np.float64) - np.asarray(scores, dtype=np.float64))))
    raise ValueError(f"unknown task kind {kind!r}")


def higher_is_better(kind: TaskKind) -> bool:
    """AUROC: higher is better; MAE: lower is better (the probes select checkpoints by this)."""
    return kind != "regression"


def metric_name(kind: TaskKind) -> str:
    return {"binary": "auroc", "multiclass": "macro_auroc", "multilabel": "macro_auroc"}.get(kind, "mae")


def held_out_metrics(kind: TaskKind, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """What a bundle's manifest records for a probe: the headline metric under its manifest name, plus
    balanced accuracy (classifiers) or R² (regression); an undefined AUROC is left out rather than NaN."""
    if kind == "regression":
        from sklearn.metrics import r2_score

        return {"mae": score_task(kind, y, scores), "r2": float(r2_score(y, scores))}
    out: dict[str, float] = {}
    if kind in ("binary", "multiclass"):
        from sklearn.metrics import balanced_accuracy_score

        columns = np.stack([1.0 - scores, scores], axis=1) if kind == "binary" else scores
        out["balanced_accuracy"] = float(balanced_accuracy_score(y, columns.argmax(axis=1)))
    auroc = score_task(kind, y, scores)
    if not math.isnan(auroc):
        out["auroc"] = auroc
    return out


def top_label(kind: TaskKind, y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, correct)`` of the predicted class per answer; multilabel: every (row, label) answer."""
    if kind == "multilabel":
        p, truth = np.ravel(scores), np.ravel(np.asarray(y, dtype=int))
        return np.maximum(p, 1.0 - p), (p >= 0.5).astype(int) == truth
    columns = np.stack([1.0 - scores, scores], axis=1) if kind == "binary" else np.asarray(scores)
    return columns.max(axis=1), columns.argmax(axis=1) == np.asarray(y, dtype=int)


def reliability(
    kind: TaskKind, y: np.ndarray, scores: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (NaN where a bin is empty)."""
    confidence, correct = top_label(kind, y, scores)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, minlength=bins) / count
        accuracy = np.bincount(index, correct.astype(float), minlength=bins) / count
    return mean_confidence, accuracy, count


def expected_calibration_error(kind: TaskKind, y: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over confidence bins."""
    confidence, accuracy, count = reliability(kind, y, scores, bins)
    filled = count > 0
    return float(np.sum(count[filled] * np.abs(accuracy[filled] - confidence[filled])) / count.sum())
