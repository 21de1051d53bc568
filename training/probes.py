"""The linear probe: the benchmark's ``logistic`` row and every probe a bundle ships are this one model.

Standardise with training-side statistics, then scikit-learn logistic regression with balanced class
weights (one per label for multilabel tasks) or ridge regression on a standardised target. The one
hyperparameter (C or alpha) is chosen on a subject-grouped validation split of the training side, then the
probe is refitted on all of it. Deterministic: no seeds beyond the fixed split.

Classifiers are then calibrated: a temperature and a shift per output fitted on out-of-fold logits of the
training side, subject-grouped K-fold with the chosen hyperparameter (:mod:`acula.training.calibration`);
the probe shipped is the one fitted on all of the training side, with the temperature stored beside its
weights and the shift folded into its bias.

A fitted probe is kept as the arrays of its ``.npz`` (float32, exactly as a bundle stores them) and always
scored through the service's own :class:`~acula.service.core.probes.LinearProbe`, so a benchmark number, a
manifest metric and a served answer come from the same arithmetic on the same stored numbers.

The validation split is grouped by subject because recordings of one patient are near-duplicates: a
recording-level split would pick the hyperparameter that memorises patients best.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import numpy as np

from acula.service.bundle import ProbeSpec
from acula.service.core.probes import LinearProbe
from acula.training.bench.metrics import TaskKind, higher_is_better, score_task
from acula.training.calibration import Calibrator, fit_calibration

ManifestKind = Literal["classification", "multilabel", "regression"]
LOGISTIC_C = (0.001, 0.01, 0.1, 1.0)
RIDGE_ALPHA = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
DEFAULT_C, DEFAULT_ALPHA = 0.1, 10.0  # moderate defaults when there are too few subjects to validate on
MIN_SUBJECTS = 10  # fewer subjects than this: no grouped validation split, the defaults above are used
MAX_ITER = 3000
CALIBRATION_FOLDS = 5


def manifest_kind(kind: TaskKind) -> ManifestKind:
    """The bundle's word for a task kind: binary and multiclass are both one softmax ``classification``."""
    return "classification" if kind in ("binary", "multiclass") else kind  # type: ignore[return-value]


@dataclass
class ProbeOutput:
    """Scores on the evaluated rows (layout as in :mod:`training.bench.metrics`) and how they were made."""

    scores: np.ndarray
    info: dict[str, object] = field(default_factory=dict)
    uncalibrated: np.ndarray | None = None  # the same probe's scores without its temperature, if it has one


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training-side mean and scale; constant columns get scale 1 so they stay zero."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale < 1e-8, 1.0, scale)


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


class ProbeFitError(ValueError):
    """A probe that cannot be shipped: a class or label has no training-side example of each value."""


def _logistic(z: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=MAX_ITER, class_weight="balanced").fit(z, y)
    return model.coef_, model.intercept_, model.classes_.astype(int)


def _classifier_rows(
    z: np.ndarray, y: np.ndarray, c: float, outputs: int, names: list[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(weight, bias)`` of a softmax over ``outputs`` classes (binary: sklearn's single row).

    A class absent from the training side cannot be fitted: with ``names`` (a shipped probe, which must
    answer every label) that is refused; otherwise the class gets bias -inf, i.e. probability exactly 0.
    """
    present = set(np.unique(y).tolist())
    if names is not None and len(present) != outputs:
        missing = [names[i] for i in range(outputs) if i not in present]
        raise ProbeFitError(f"classes {missing} have no training-side recording")
    weight, bias, classes = _logistic(z, y, c)
    if len(classes) == outputs:
        return weight, bias
    if len(classes) == 2:  # a binary fit among more classes: the same model as a two-row softmax
        weight, bias = np.concatenate([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    full_weight = np.zeros((outputs, z.shape[1]))
    full_bias = np.full(outputs, -np.inf)
    full_weight[classes], full_bias[classes] = weight, bias
    return full_weight, full_bias


def _fit_arrays(
    z: np.ndarray, y: np.ndarray, kind: TaskKind, value: float, outputs: int, names: list[str] | None
) -> dict[str, np.ndarray]:
    """The linear layer on standardised features ``z`` (weight, bias, and the target scale for ridge).

    ``names`` (the output labels) makes it strict: see :func:`fit_linear_probe`.
    """
    if kind in ("binary", "multiclass"):
        weight, bias = _classifier_rows(z, y, value, outputs, names)
        return {"weight": weight, "bias": bias}
    if kind == "multilabel":
        weights, biases = [], []
        for j in range(outputs):
            target = np.asarray(y)[:, j]
            if len(np.unique(target)) < 2:
                if names is not None:
                    raise ProbeFitError(f"label {names[j]} has one value on the training side")
                weights.append(np.zeros(z.shape[1]))  # no information: probability 0.5
                biases.append(0.0)
                continue
            weight, bias, _ = _logistic(z, target, value)
            weights.append(weight[0])
            biases.append(bias[0])
        return {"weight": np.stack(weights), "bias": np.asarray(biases)}
    from sklearn.linear_model import Ridge

    target = np.asarray(y, dtype=np.float64)
    t_mean, t_scale = float(target.mean()), float(target.std() or 1.0)
    model = Ridge(alpha=value).fit(z, (target - t_mean) / t_scale)
    return {
        "weight": model.coef_[None, :],
        "bias": np.atleast_1d(model.intercept_),
        "target_mean": np.asarray([t_mean]),
        "target_scale": np.asarray([t_scale]),
    }


@dataclass
class LinearFit:
    """A fitted probe: its ``.npz`` arrays as stored (float32) and how its hyperparameter was chosen."""

    kind: TaskKind
    arrays: dict[str, np.ndarray]
    choice: dict[str, object]
    calibrated_on: int = 0  # training-side rows whose out-of-fold logits fitted the calibration
    calibrator: Calibrator | None = None  # already applied to ``arrays`` (temperature, shift in the bias)

    @property
    def temperature(self) -> np.ndarray | None:
        return self.arrays.get("temperature")

    def uncalibrated(self) -> LinearFit:
        """The same probe without its calibration (what the probabilities were before it)."""
        arrays = {key: value for key, value in self.arrays.items() if key != "temperature"}
        if self.calibrator is not None:  # take the shift back out of the bias
            bias = (
                self.arrays["bias"].astype(np.float64) - self.calibrator.shift * self.calibrator.temperature
            )
            arrays["bias"] = bias.astype(np.float32)
        return LinearFit(self.kind, arrays, self.choice)  # calibrated on nothing

    def save(self, file: Path | IO[bytes]) -> None:
        arrays: dict[str, Any] = self.arrays  # numpy's stubs read ** as its keyword arguments
        np.savez(file, **arrays)

    def service_probe(self, labels: list[str] | None = None) -> LinearProbe:
        """The service's probe over these arrays (``labels``: class names; default ``"0"``, ``"1"``...)."""
        outputs = len(self.arrays["bias"])
        kind = manifest_kind(self.kind)
        if labels is None:
            count = outputs if kind == "multilabel" else max(outputs, 2)
            labels = [] if kind == "regression" else [str(i) for i in range(count)]
        spec = ProbeSpec(task="probe", kind=kind, file="probe.npz", labels=labels)
        buffer = io.BytesIO()
        self.save(buffer)
        buffer.seek(0)  # np.load reads a file object as it reads a path
        return LinearProbe(spec, cast(Path, buffer), dim=len(self.arrays["mean"]))

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Scores in the benchmark's layout (:mod:`training.bench.metrics`), through the service's probe."""
        out = self.service_probe().scores(np.asarray(x, dtype=np.float64))
        if self.kind == "binary":
            return out[:, 1]
        return out[:, 0] if self.kind == "regression" else out


def _as_stored(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.asarray(value, dtype=np.float32) for key, value in arrays.items()}


def _out_of_fold_logits(
    z: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: TaskKind, value: float, outputs: int
) -> np.ndarray | None:
    """Logits of every training row from a probe fitted without that row's subject (grouped K-fold, the
    chosen hyperparameter); None when some fold cannot be fitted (a class missing from its fitting part)."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    folds = min(CALIBRATION_FOLDS, len(np.unique(groups)))
    try:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
        splits = list(splitter.split(z, _stratum(y, kind), groups))
    except ValueError:
        splits = list(GroupKFold(n_splits=folds).split(z, y, groups))
    logits = np.zeros((len(z), 1 if kind == "binary" else outputs))
    for fit_rows, held_rows in splits:
        try:
            arrays = _fit_arrays(z[fit_rows], y[fit_rows], kind, value, outputs, None)
        except ValueError:
            return None
        logits[held_rows] = z[held_rows] @ arrays["weight"].T + arrays["bias"]
    return logits[:, 0] if kind == "binary" else logits


def _validation(
    z: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: TaskKind, outputs: int
) -> tuple[float, dict[str, float]]:
    """The candidate with the best grouped-validation metric (ties: the first, i.e. the most regularised)."""
    candidates = RIDGE_ALPHA if kind == "regression" else LOGISTIC_C
    fit_rows, val_rows = grouped_validation_split(y, groups, kind)
    identity = {"mean": np.zeros(z.shape[1]), "scale": np.ones(z.shape[1])}  # z is standardised already
    results = {}
    for value in candidates:
        arrays = _fit_arrays(z[fit_rows], y[fit_rows], kind, value, outputs, None)
        candidate = LinearFit(kind, _as_stored(arrays | identity), {})
        results[str(value)] = score_task(kind, y[val_rows], candidate.scores(z[val_rows]))
    sign = 1.0 if higher_is_better(kind) else -1.0
    finite = {k: v for k, v in results.items() if not np.isnan(v)}
    best = max(finite, key=lambda k: sign * finite[k]) if finite else str(candidates[len(candidates) // 2])
    return float(best), results


def fit_linear_probe(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    kind: TaskKind,
    outputs: int,
    names: list[str] | None = None,
    calibrate: bool = True,
) -> LinearFit:
    """Choose C (or alpha) on a grouped validation split of ``x``, then fit on all of it.

    ``y``: class indices (binary, multiclass), ``(n, outputs)`` 0/1 (multilabel) or floats (regression);
    ``groups``: subject ids. Given ``names`` (the outputs' labels), a class or label without training-side
    examples of each value raises :class:`ProbeFitError`, as a shipped probe must answer every output;
    without, the benchmark's answer for it is probability 0 (absent class) or 0.5 (one-valued label).
    ``calibrate``: fit a temperature (classifiers with enough subjects; see the module docstring).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    mean, scale = standardiser(x)
    z = (x - mean) / scale
    default = DEFAULT_ALPHA if kind == "regression" else DEFAULT_C
    value, validation = default, dict[str, float]()
    if len(np.unique(groups)) >= MIN_SUBJECTS:
        value, validation = _validation(z, y, np.asarray(groups), kind, outputs)
    arrays = {"mean": mean, "scale": scale} | _fit_arrays(z, y, kind, value, outputs, names)
    name = ("ridge", "alpha") if kind == "regression" else ("logistic", "C")
    choice: dict[str, object] = {"probe": name[0], name[1]: value, "validation": validation}
    if calibrate and kind != "regression" and len(np.unique(groups)) >= MIN_SUBJECTS:
        logits = _out_of_fold_logits(z, y, np.asarray(groups), kind, value, outputs)
        if logits is not None:
            # A row whose class no other fold had gets logit -inf for it: it says nothing about the scale.
            seen = np.isfinite(logits[np.arange(len(y)), y]) if kind == "multiclass" else slice(None)
            calibrator = fit_calibration(kind, logits[seen], y[seen])
            arrays["temperature"] = calibrator.temperature
            arrays["bias"] = arrays["bias"] + calibrator.shift * calibrator.temperature  # (z + s T) / T
            choice |= {"temperature": calibrator.temperature.tolist(), "shift": calibrator.shift.tolist()}
            return LinearFit(kind, _as_stored(arrays), choice, len(z), calibrator)
    return LinearFit(kind, _as_stored(arrays), choice)


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    groups_train: np.ndarray,
    x_eval: np.ndarray,
    kind: TaskKind,
    num_outputs: int,
) -> ProbeOutput:
    """The benchmark's ``logistic`` row: fit on the training side, score ``x_eval``."""
    fit = fit_linear_probe(x_train, y_train, groups_train, kind, num_outputs)
    raw = fit.uncalibrated().scores(x_eval) if fit.temperature is not None else None
    return ProbeOutput(fit.scores(x_eval), fit.choice, raw)
