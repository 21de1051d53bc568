"""``sound_type.npz``: which kind of sound an upload is (heart, lung, cough, breathing, not auscultation).

The service gates its probes on this answer (a heart-sound probe says nothing about a cough), so it is an
ordinary calibrated probe over the same pooled embedding, trained on the training side of every dataset
(types from :mod:`training.data.sound_types`) plus generated speech, music and noise
(:mod:`training.data.synthetic`) for "not auscultation". Its confusion matrix counts held-out recordings
only: the test side of every dataset's split and generated clips from seeds training never used.

Bandwidth is not a sound type. In ../shared/data heart sounds are stored at 2-4 kHz and lung sounds mostly at
8 kHz, so a classifier left alone learns "band-limited means heart", and a lung recording from a 4 kHz
stethoscope is gated as a heart sound. Every training-side recording stored above a limit in
:data:`BAND_LIMITS_HZ` therefore enters a second time, band-limited to one of them, and the held-out metrics
include the test side band-limited the same way (``band_limited_accuracy/<Hz>``).

Held-out accuracy only says how the classifier does on recordings of the sources it trained on. How it
does on a source it never heard (another hospital's stethoscope) is measured too: for each real source, the
classifier is refitted without that source's recordings (same C, same band-limited copies of the others) and
scored on all of them (``unseen_source_accuracy/<dataset>``). Where a sound type has a single source, this
figure is what an integrator should expect from a new device, and the model card says so.

``min_probability`` is chosen on those held-out recordings: the lowest calibrated confidence, on a 0.05
grid, above which the held-out answers are at least :data:`TARGET_ACCURACY` correct. Below it the service
treats the sound type as unknown rather than gate on a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acula.service.bundle import NOT_AUSCULTATION, SOUND_TYPES, ProbeDomain, SoundTypeSpec
from acula.service.core.windowing import cut_windows
from acula.training.data.records import Recording
from acula.training.data.sound_types import sound_type
from acula.training.data.synthetic import DATASET as GENERATED
from acula.training.export.embedder import RecordingEmbedder
from acula.training.export.inputs import ProbeTask
from acula.training.export.probes import fit_probe, usable_task
from acula.training.probes import MAX_ITER, standardiser

Log = Callable[[str], None]
LABELS = [*SOUND_TYPES, NOT_AUSCULTATION]
BAND_LIMITS_HZ = (4000, 2000)  # sample rates of common electronic stethoscopes' recordings
TARGET_ACCURACY = 0.95
CONFUSION_SOURCE = (
    "held-out recordings: the test side of every dataset's subject-level split, and generated "
    "non-auscultation clips from seeds disjoint from the training clips"
)


def label(record: Recording) -> str | None:
    return NOT_AUSCULTATION if record.dataset == GENERATED else sound_type(record)


def sound_type_task(records: Sequence[Recording]) -> tuple[ProbeTask | None, str]:
    """The classifier's task over real and generated records, or None and why it cannot be fitted."""
    train: list[tuple[Recording, Any]] = []
    test: list[tuple[Recording, Any]] = []
    for record in records:
        target = label(record) if record.audio_path is not None else None
        if target is None:
            continue
        if record.split == "train":
            train.append((record, target))
        elif record.split.startswith("test"):
            test.append((record, target))
    missing = [name for name in LABELS if name not in {y for _, y in train}]
    if missing:
        return None, f"no training-side recordings of {missing}"
    datasets = sorted({r.dataset for r, _ in train} - {GENERATED})
    task = ProbeTask(
        name="sound-type",
        kind="multiclass",
        train=train,
        test=test,
        labels=LABELS,
        description="Sound type of the upload: heart, lung, cough, breathing, or not auscultation.",
        domain=ProbeDomain(sound_types=list(SOUND_TYPES), population="mixed", dataset="+".join(datasets)),
    )
    return task, ""


def min_probability(confidence: np.ndarray, correct: np.ndarray) -> tuple[float, float, float]:
    """``(threshold, accuracy above it, share of recordings above it)``; see the module docstring."""
    for threshold in np.round(np.arange(0.2, 0.96, 0.05), 2):
        kept = confidence >= threshold
        if kept.any() and correct[kept].mean() >= TARGET_ACCURACY:
            return float(threshold), float(correct[kept].mean()), float(kept.mean())
    kept = confidence >= 0.95
    accuracy = float(correct[kept].mean()) if kept.any() else float("nan")
    return 0.95, accuracy, float(kept.mean())


def refit_probabilities(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, c: float
) -> tuple[np.ndarray, np.ndarray]:
    """The shipped classifier's model (standardised embedding, class-balanced logistic regression at ``C``)
    refitted on ``x_train``: its classes and their probabilities for each row of ``x_eval``. Uncalibrated:
    only the argmax and the confidence threshold are read from it."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = standardiser(x_train)
    model = LogisticRegression(C=c, max_iter=MAX_ITER, class_weight="balanced")
    model.fit((x_train - mean) / scale, y_train)
    return model.classes_, model.predict_proba((x_eval - mean) / scale)


def unseen_source_accuracy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    train_sources: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    eval_sources: np.ndarray,
    c: float,
) -> dict[str, float]:
    """Accuracy on each real source's recordings (``eval``) of the classifier refitted on ``train`` without
    that source (:func:`refit_probabilities`). Only recordings of sound types some other source also has
    are scored (refitted without their one source, the others could not be named at all); a source with
    none of them is left out."""
    result: dict[str, float] = {}
    for source in sorted(set(eval_sources.tolist()) - {GENERATED}):
        keep = train_sources != source
        chosen = (eval_sources == source) & np.isin(y_eval, y_train[keep])
        if not chosen.any():
            continue
        classes, probabilities = refit_probabilities(x_train[keep], y_train[keep], x_eval[chosen], c)
        predicted = classes[probabilities.argmax(axis=1)]
        result[source] = round(float(np.mean(predicted == y_eval[chosen])), 4)
    return result


def band_limit(samples: np.ndarray, rate: int, limit: int) -> np.ndarray:
    """``samples`` at ``rate`` as a recording stored at ``limit`` Hz would sound, back at ``rate``."""
    import soxr

    low = soxr.resample(samples, rate, limit, quality="HQ")
    return np.asarray(soxr.resample(low, limit, rate, quality="HQ"), dtype=np.float32)


def band_limited(
    pairs: Sequence[tuple[Recording, Any]], embedder: RecordingEmbedder, batch_size: int, every_limit: bool
) -> tuple[list[tuple[Recording, Any]], list[int], np.ndarray]:
    """Embeddings of band-limited copies of the recordings stored above a limit: one limit per recording,
    taken in turn (training), or every limit (held-out figures). Returns the pairs, each copy's limit and
    the ``(n, D)`` embeddings."""
    rate = embedder.contract.sample_rate
    chosen: list[tuple[Recording, Any]] = []
    limits: list[int] = []
    for index, (record, target) in enumerate(pairs):
        below = [limit for limit in BAND_LIMITS_HZ if (record.native_rate or rate) > limit]
        if not below:
            continue
        for limit in below if every_limit else [below[index % len(below)]]:
            chosen.append((record, target))
            limits.append(limit)
    rows = []
    for (record, _), limit in zip(chosen, limits, strict=True):
        windows = cut_windows(band_limit(embedder.samples(record), rate, limit), embedder.contract)
        rows.append(embedder.embed_windows(windows, batch_size)[0])
    return chosen, limits, np.stack(rows) if rows else np.zeros((0, 0), np.float32)


def fit_sound_type(
    task: ProbeTask, embedder: RecordingEmbedder, out_dir: Path, log: Log, batch_size: int
) -> SoundTypeSpec:
    """Fit, save ``sound_type.npz`` and return its spec with the held-out confusion matrix."""
    task = usable_task(task, embedder, log)
    x_train, _ = embedder.embed([r for r, _ in task.train], batch_size)
    x_test, _ = embedder.embed([r for r, _ in task.test], batch_size)
    copies, _, x_copies = band_limited(task.train, embedder, batch_size, every_limit=False)
    log(f"sound type: {len(copies)} band-limited training copies ({', '.join(map(str, BAND_LIMITS_HZ))} Hz)")
    task = task.with_recordings(task.train + copies, task.test)
    if copies:  # none when every training recording is stored at 2 kHz or below
        x_train = np.concatenate([x_train, x_copies])
    fitted = fit_probe(task, x_train, x_test, out_dir, file="sound_type.npz")
    truth = fitted.y_test
    predicted = fitted.test_scores.argmax(axis=1)
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)
    correct = predicted == truth
    threshold, accuracy, coverage = min_probability(fitted.test_scores.max(axis=1), correct)
    metrics = dict(fitted.spec.metrics) | {"accuracy": round(float(correct.mean()), 4)}
    datasets = np.asarray([r.dataset for r, _ in task.test])
    for dataset in sorted(set(datasets)):
        metrics[f"accuracy/{dataset}"] = round(float(correct[datasets == dataset].mean()), 4)
    held_out, limits, x_limited = band_limited(task.test, embedder, batch_size, every_limit=True)
    if held_out:
        truth_limited = np.asarray([LABELS.index(y) for _, y in held_out])
        right = fitted.fit.scores(x_limited).argmax(axis=1) == truth_limited
        for limit in sorted(set(limits)):
            chosen = np.asarray(limits) == limit
            metrics[f"band_limited_accuracy/{limit}"] = round(float(right[chosen].mean()), 4)
    originals = len(task.train) - len(copies)  # the copies were appended after the real training rows
    y_train = np.asarray([LABELS.index(y) for _, y in task.train])
    unseen = unseen_source_accuracy(
        x_train,
        y_train,
        np.asarray([r.dataset for r, _ in task.train]),
        np.concatenate([x_train[:originals], x_test]),  # every recording of a source, neither side seen
        np.concatenate([y_train[:originals], truth]),
        np.concatenate([[r.dataset for r, _ in task.train[:originals]], datasets]),
        float(fitted.fit.choice["C"]),  # type: ignore[arg-type]
    )
    for source, value in unseen.items():
        metrics[f"unseen_source_accuracy/{source}"] = value
    log(f"sound type, refitted without each source: {unseen}")
    if not np.isnan(accuracy):
        metrics["accuracy_above_min_probability"] = round(accuracy, 4)
    metrics["coverage"] = round(coverage, 4)
    spec = fitted.spec.model_dump(exclude={"task", "kind", "file", "metrics"})
    return SoundTypeSpec(
        **spec,
        metrics=metrics,
        min_probability=threshold,
        confusion=confusion.tolist(),
        confusion_source=CONFUSION_SOURCE,
    )


def classifier(
    records: Sequence[Recording], embedder: RecordingEmbedder, out_dir: Path, log: Log, batch_size: int
) -> SoundTypeSpec | None:
    """The classifier over real and generated ``records``, or None (said in the log) when a type has no
    training-side recording to learn it from."""
    task, why = sound_type_task(records)
    if task is None:
        log(f"sound-type classifier left out: {why}")
        return None
    return fit_sound_type(task, embedder, out_dir, log, batch_size)
