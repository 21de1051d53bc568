"""Linear probes for the bundle: fitted on the training side, scored on the held-out side, saved as ``.npz``.

A probe is standardisation followed by one linear layer, which is exactly what the service's numpy
``LinearProbe`` computes (``service/core/probes.py``); that is why these are fitted with scikit-learn but
stored as plain arrays (``weight``, ``bias``, ``mean``, ``scale`` and for regression ``target_mean``,
``target_scale``): no pickle, and no scikit-learn at serving time. The held-out metrics written into the
manifest are computed from those same arrays through the service's probe code, so a manifest cannot claim
a number that the shipped probe does not reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from acula.service.bundle import ProbeSpec

ProbeKind = Literal["classification", "multilabel", "regression"]


@dataclass
class ProbeData:
    """Pooled embeddings and targets of one task, already split at the subject level.

    ``y_*``: class names (classification), ``(n, labels)`` 0/1 arrays (multilabel) or floats (regression).
    """

    task: str
    kind: ProbeKind
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str] = field(default_factory=list)
    unit: str | None = None
    description: str = ""
    groups_train: np.ndarray | None = None  # subject ids: the hyperparameter is chosen on a grouped split


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale < 1e-8, 1.0, scale)


def class_order(data: ProbeData) -> list[str]:
    """The task's own class order when given (negative first for binary tasks), else sorted names."""
    return list(data.labels) if data.labels else sorted({str(v) for v in data.y_train})


def _fit_arrays(data: ProbeData, c: float, alpha: float) -> tuple[dict[str, np.ndarray], list[str]]:
    """Fit on the training side; returns the ``.npz`` arrays and the label order they use."""
    from sklearn.linear_model import LogisticRegression, Ridge

    mean, scale = _standardise(data.x_train.astype(np.float64))
    z = (data.x_train - mean) / scale
    arrays = {"mean": mean, "scale": scale}
    if data.kind == "classification":
        labels = class_order(data)
        present = sorted({labels.index(str(v)) for v in data.y_train})
        if present != list(range(len(labels))):
            missing = [labels[i] for i in range(len(labels)) if i not in present]
            raise ValueError(f"task {data.task}: classes {missing} have no training-side recording")
        model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
        model.fit(z, np.asarray([labels.index(str(v)) for v in data.y_train]))  # rows follow `labels`
        arrays |= {"weight": model.coef_, "bias": model.intercept_}
        return arrays, labels
    if data.kind == "multilabel":
        y = np.asarray(data.y_train, dtype=np.int64)
        weights, biases = [], []
        for j, label in enumerate(data.labels):
            if len(np.unique(y[:, j])) < 2:
                raise ValueError(f"task {data.task}: label {label} has one value on the training side")
            model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(z, y[:, j])
            weights.append(model.coef_[0])
            biases.append(model.intercept_[0])
        arrays |= {"weight": np.stack(weights), "bias": np.asarray(biases)}
        return arrays, list(data.labels)
    target = np.asarray(data.y_train, dtype=np.float64)
    t_mean, t_scale = float(target.mean()), float(target.std() or 1.0)
    model = Ridge(alpha=alpha).fit(z, (target - t_mean) / t_scale)
    arrays |= {
        "weight": model.coef_[None, :],
        "bias": np.atleast_1d(model.intercept_),
        "target_mean": np.asarray([t_mean]),
        "target_scale": np.asarray([t_scale]),
    }
    return arrays, []


def _metrics(data: ProbeData, scores: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Held-out metrics from the stored probe's own outputs."""
    from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score

    out: dict[str, float] = {"n_train": float(len(data.x_train)), "n_test": float(len(data.x_test))}
    if data.kind == "regression":
        truth = np.asarray(data.y_test, dtype=np.float64)
        out |= {
            "mae": float(mean_absolute_error(truth, scores[:, 0])),
            "r2": float(r2_score(truth, scores[:, 0])),
        }
        return out
    if data.kind == "multilabel":
        truth = np.asarray(data.y_test, dtype=np.int64)
        aurocs = [
            roc_auc_score(truth[:, j], scores[:, j])
            for j in range(truth.shape[1])
            if len(set(truth[:, j])) > 1
        ]
        if aurocs:
            out["auroc"] = float(np.mean(aurocs))
        return out
    truth = np.asarray([str(v) for v in data.y_test])
    predicted = np.asarray(labels)[scores.argmax(axis=1)]
    out["balanced_accuracy"] = float(balanced_accuracy_score(truth, predicted))
    present = [i for i, label in enumerate(labels) if label in set(truth)]
    if len(present) >= 2:
        if len(labels) == 2:
            out["auroc"] = float(roc_auc_score(truth == labels[1], scores[:, 1]))
        else:
            per_class = [roc_auc_score(truth == labels[i], scores[:, i]) for i in present]
            out["auroc"] = float(np.mean(per_class))  # macro one-vs-rest over classes present
    return out


def choose_regularisation(data: ProbeData) -> tuple[float, float]:
    """``(C, alpha)`` picked exactly as the benchmark's logistic/ridge probe picks them.

    :func:`training.bench.probes.linear_probe` chooses on a subject-grouped validation split of the training
    side; reusing it keeps the shipped probe and the benchmark's ``logistic`` row the same model.
    """
    from acula.training.bench.probes import linear_probe

    if data.groups_train is None or len(np.unique(data.groups_train)) < 10:
        return 0.1, 10.0  # too few subjects for a grouped validation split: moderate defaults
    if data.kind == "regression":
        y = np.asarray(data.y_train, dtype=np.float64)
        kind, outputs = "regression", 1
    elif data.kind == "multilabel":
        y = np.asarray(data.y_train, dtype=np.int64)
        kind, outputs = "multilabel", y.shape[1]
    else:
        classes = class_order(data)
        y = np.asarray([classes.index(str(v)) for v in data.y_train])
        kind, outputs = ("binary" if len(classes) == 2 else "multiclass"), len(classes)
    info = linear_probe(data.x_train, y, data.groups_train, data.x_train[:1], kind, outputs).info
    return float(info.get("C", 0.1)), float(info.get("alpha", 10.0))  # type: ignore[arg-type]


def fit_probe(data: ProbeData, out_dir: Path) -> ProbeSpec:
    """Fit, save ``probe_<task>.npz`` into ``out_dir`` and return its spec with held-out metrics."""
    from acula.service.core.probes import LinearProbe

    if len(data.x_train) == 0 or len(data.x_test) == 0:
        raise ValueError(f"task {data.task}: needs recordings on both sides of its split")
    c, alpha = choose_regularisation(data)
    arrays, labels = _fit_arrays(data, c, alpha)
    file = f"probe_{data.task}.npz"
    np.savez(Path(out_dir) / file, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    spec = ProbeSpec(
        task=data.task,
        kind=data.kind,
        file=file,
        labels=labels,
        unit=data.unit,
        description=data.description,
    )
    probe = LinearProbe(spec, Path(out_dir) / file, dim=data.x_train.shape[1])
    scores = probe.scores(np.asarray(data.x_test, dtype=np.float64))
    metrics = {k: round(v, 4) for k, v in _metrics(data, scores, labels).items()}
    fitted = f"ridge, alpha={alpha:g}" if data.kind == "regression" else f"logistic, C={c:g}"
    description = f"{data.description} ({fitted}; standardised pooled embedding)".strip()
    return spec.model_copy(update={"metrics": metrics, "description": description})
