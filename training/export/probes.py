"""The bundle's probes: one per benchmark task, fitted on its training side, scored on its held-out side.

The probe is :mod:`training.probes` (the benchmark's logistic/ridge row, the same model, calibrated by a
temperature fitted on out-of-fold logits of its training side), fitted on pooled embeddings computed
through the exported graph; it is stored as plain arrays (``probe_<task>.npz``: no pickle, no scikit-learn
at serving time). The held-out metrics written into the manifest, and the expected calibration error before
and after the temperature, are computed from those stored arrays through the service's probe code, so a
manifest cannot claim a number that the shipped probe does not reach. Each spec carries its task's domain
(sound type, population, dataset, conditions) and purpose, so the service knows where an answer applies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acula.service.bundle import Calibration, ProbeSpec
from acula.training.bench.metrics import expected_calibration_error, held_out_metrics
from acula.training.export.embedder import RecordingEmbedder
from acula.training.export.inputs import ProbeTask
from acula.training.probes import LinearFit, ProbeFitError, fit_linear_probe, manifest_kind

Log = Callable[[str], None]
ECE_BINS = 10


@dataclass
class FittedProbe:
    """A saved probe's spec, its held-out targets and (calibrated) scores for further figures, and the fit
    itself, to score further held-out embeddings."""

    spec: ProbeSpec
    y_test: np.ndarray
    test_scores: np.ndarray
    fit: LinearFit


def class_order(task: ProbeTask) -> list[str]:
    """The task's own class order when given (negative first for binary tasks), else sorted names."""
    return list(task.labels) if task.labels else sorted({str(y) for _, y in task.train})


def targets(task: ProbeTask, values: Sequence[Any], labels: list[str]) -> np.ndarray:
    """Targets as :func:`training.probes.fit_linear_probe` reads them, in the order of ``labels``."""
    if task.kind == "multilabel":
        return np.asarray([[int(label in set(v)) for label in labels] for v in values], dtype=np.int64)
    if task.kind == "regression":
        return np.asarray(values, dtype=np.float64)
    unknown = sorted({str(v) for v in values} - set(labels))
    if unknown:
        raise ProbeFitError(f"task {task.name}: classes {unknown} are not among its labels {labels}")
    return np.asarray([labels.index(str(v)) for v in values])


def calibration(fit: LinearFit, y_test: np.ndarray, x_test: np.ndarray) -> Calibration | None:
    """The temperature and the test side's expected calibration error without and with it."""
    if fit.temperature is None:
        return None
    before = expected_calibration_error(fit.kind, y_test, fit.uncalibrated().scores(x_test), ECE_BINS)
    after = expected_calibration_error(fit.kind, y_test, fit.scores(x_test), ECE_BINS)
    return Calibration(
        method="affine",
        temperature=[float(t) for t in fit.temperature],
        shift=[round(float(s), 6) for s in fit.calibrator.shift] if fit.calibrator is not None else [],
        fitted_on=fit.calibrated_on,
        ece_before=round(before, 4),
        ece_after=round(after, 4),
        bins=ECE_BINS,
    )


def fit_probe(
    task: ProbeTask, x_train: np.ndarray, x_test: np.ndarray, out_dir: Path, file: str | None = None
) -> FittedProbe:
    """Fit, save ``probe_<task>.npz`` (or ``file``) into ``out_dir``; its spec has the held-out metrics."""
    if len(x_train) == 0 or len(x_test) == 0:
        raise ValueError(f"task {task.name}: needs recordings on both sides of its split")
    labels = [] if task.kind == "regression" else class_order(task)
    y_train = targets(task, [y for _, y in task.train], labels)
    y_test = targets(task, [y for _, y in task.test], labels)
    groups = np.asarray([f"{r.dataset}/{r.subject_id}" for r, _ in task.train])
    try:
        fit = fit_linear_probe(x_train, y_train, groups, task.kind, max(1, len(labels)), names=labels)
    except ProbeFitError as exc:
        raise ProbeFitError(f"task {task.name}: {exc}") from exc
    file = file or f"probe_{task.name}.npz"
    fit.save(Path(out_dir) / file)
    scores = fit.scores(x_test)
    metrics = {"n_train": float(len(x_train)), "n_test": float(len(x_test))}
    metrics |= held_out_metrics(task.kind, y_test, scores)
    value = f"alpha={fit.choice['alpha']:g}" if task.kind == "regression" else f"C={fit.choice['C']:g}"
    fitted = f"{fit.choice['probe']}, {value}"
    spec = ProbeSpec(
        task=task.name,
        kind=manifest_kind(task.kind),
        file=file,
        labels=labels,
        unit=task.unit,
        description=f"{task.description} ({fitted}; standardised pooled embedding)".strip(),
        metrics={k: round(v, 4) for k, v in metrics.items()},
        purpose=task.purpose,
        domain=task.domain,
        calibration=calibration(fit, y_test, x_test),
    )
    return FittedProbe(spec, y_test, scores, fit)


def usable_task(task: ProbeTask, embedder: RecordingEmbedder, log: Log) -> ProbeTask:
    """The task without the recordings whose audio cannot be decoded (said in the log)."""
    usable = {id(r) for r in embedder.usable([r for r, _ in task.train + task.test])}
    dropped = len(task.train) + len(task.test) - len(usable)
    if dropped:
        log(f"probe {task.name}: {dropped} recording(s) left out, their audio cannot be decoded")
    train = [pair for pair in task.train if id(pair[0]) in usable]
    test = [pair for pair in task.test if id(pair[0]) in usable]
    return task.with_recordings(train, test)


def fit_probes(
    tasks: Sequence[ProbeTask], embedder: RecordingEmbedder, out: Path, log: Log, batch_size: int = 32
) -> list[ProbeSpec]:
    specs = []
    for task in tasks:
        started = time.perf_counter()
        task = usable_task(task, embedder, log)
        x_train, _ = embedder.embed([r for r, _ in task.train], batch_size)
        x_test, _ = embedder.embed([r for r, _ in task.test], batch_size)
        spec = fit_probe(task, x_train, x_test, out).spec
        specs.append(spec)
        ece = spec.calibration and f", ECE {spec.calibration.ece_before} -> {spec.calibration.ece_after}"
        log(f"probe {task.name}: {spec.metrics}{ece or ''} ({time.perf_counter() - started:.1f}s)")
    return specs
