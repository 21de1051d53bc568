"""``ood_reference.npz``: how unlike the training recordings an upload is, and where to flag it.

The service scores an upload's pooled embedding ``x`` as ``1 - mean of the k largest reference @ z`` with
``z = normalise((x - mean) @ projection)`` (``service/core/ood.py``). Here that reference is built and its
threshold set, honestly: the training-side subjects are split in two; the whitening (PCA, each component
divided by the square root of its eigenvalue, so no single loud direction dominates the cosine) and the
reference rows come from one part, and the threshold is the ``quantile`` of the other part's scores, i.e.
of recordings the reference has never seen but which are exactly what the model was trained on. The shipped
reference is that reference, so the threshold means what it says. Flag rates on each dataset's test side
and on generated non-auscultation clips are recorded, scored by the service's own code.

Each reference row also keeps its sound type (``row_sound_types``), and each sound type with enough
recordings gets a threshold of its own: the same quantile of the held-out part's scores against the
reference rows of their own type. The service does not take the classifier's sound type for an upload
past that type's threshold (``service/core/ood.py``). ``own_type/test/<dataset>`` flag rates say how often
that check fires on each test side, scored against each recording's true type.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from acula.service.bundle import SOUND_TYPES, OutOfDistributionSpec
from acula.service.core.windowing import l2_normalise
from acula.training.data.records import Recording
from acula.training.data.sound_types import sound_type
from acula.training.export.embedder import RecordingEmbedder

if TYPE_CHECKING:
    from acula.service.core.ood import OodResult, OodScorer

COMPONENTS = 64
K = 5
QUANTILE = 0.99
HELD_OUT_FRACTION = 0.2
MAX_REFERENCE = 4000  # rows shipped; more only grows the bundle and the per-upload product
MIN_TYPE_ROWS = 10  # held-out recordings of a sound type below which its own threshold would be a guess


def whitening(x: np.ndarray, components: int = COMPONENTS) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (D,), projection (D, P))``: the top ``P`` principal directions, scaled to unit variance."""
    mean = x.mean(axis=0)
    centred = x - mean
    covariance = centred.T @ centred / max(1, len(x) - 1)
    eigenvalues, vectors = np.linalg.eigh(covariance)  # ascending
    keep = min(components, x.shape[1], max(1, len(x) - 1))
    order = np.argsort(eigenvalues)[::-1][:keep]
    scale = np.sqrt(np.maximum(eigenvalues[order], 1e-12))
    return mean, vectors[:, order] / scale


def _held_out_subjects(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean row mask: about ``fraction`` of the subjects, whole, chosen by a seeded shuffle."""
    subjects = np.unique(groups)
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(subjects, size=max(1, round(fraction * len(subjects))), replace=False).tolist())
    return np.asarray([g in chosen for g in groups])


def fit_reference(
    x: np.ndarray,
    groups: np.ndarray,
    out_dir: Path,
    k: int = K,
    quantile: float = QUANTILE,
    seed: int = 0,
    sound_types: np.ndarray | None = None,
) -> OutOfDistributionSpec:
    """Write ``ood_reference.npz`` from training-side pooled embeddings ``x`` (subjects ``groups``), with
    per-type thresholds when each row's sound type is given ("" for none)."""
    from acula.service.core.ood import OodScorer

    x = np.asarray(x, dtype=np.float64)
    held = _held_out_subjects(np.asarray(groups), HELD_OUT_FRACTION, seed)
    reference_rows = np.flatnonzero(~held)
    if len(reference_rows) > MAX_REFERENCE:
        reference_rows = np.sort(
            np.random.default_rng(seed).choice(reference_rows, MAX_REFERENCE, replace=False)
        )
    if len(reference_rows) < max(k, 2) or not held.any():
        raise ValueError(
            f"an out-of-distribution reference needs more training-side subjects ({len(x)} rows)"
        )
    mean, projection = whitening(x[reference_rows])
    reference = l2_normalise((x[reference_rows] - mean) @ projection)
    file = "ood_reference.npz"
    stored: dict[str, np.ndarray] = {
        name: a.astype(np.float32)
        for name, a in (("mean", mean), ("projection", projection), ("reference", reference))
    }
    types = np.asarray([""] * len(x) if sound_types is None else sound_types, dtype=str)
    if sound_types is not None:
        stored["row_sound_types"] = types[reference_rows]  # a unicode array: no pickle needed to read it
    np.savez(Path(out_dir) / file, **stored)  # type: ignore[arg-type]
    kinds = [
        kind
        for kind in SOUND_TYPES
        if (held & (types == kind)).sum() >= MIN_TYPE_ROWS and (types[reference_rows] == kind).sum() >= k
    ]
    draft = OutOfDistributionSpec(
        k=k,
        threshold=1.0,
        quantile=quantile,
        reference_count=len(reference_rows),
        sound_type_thresholds=dict.fromkeys(kinds, 1.0),
    )
    scorer = OodScorer(Path(out_dir), draft, dim=x.shape[1])
    threshold = float(np.quantile(scores(scorer, x[held]), quantile))
    per_type = {
        kind: float(np.quantile(scores(scorer, x[held & (types == kind)], kind), quantile)) for kind in kinds
    }
    return draft.model_copy(update={"threshold": threshold, "sound_type_thresholds": per_type})


def scores(scorer: OodScorer, x: np.ndarray, sound_type: str | None = None) -> np.ndarray:
    """The service's score of every row of ``x`` (against the rows of ``sound_type`` only, when given)."""
    rows = np.asarray(x, dtype=np.float32)
    if sound_type is None:
        return np.asarray([scorer.score(row).score for row in rows])
    return np.asarray([_checked(scorer.score_as(row, sound_type)).score for row in rows])


def _checked(result: OodResult | None) -> OodResult:
    if result is None:
        raise ValueError("no reference rows of that sound type")
    return result


def flag_rates(out_dir: Path, spec: OutOfDistributionSpec, sets: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of each named set of pooled embeddings the service would flag with this reference."""
    from acula.service.core.ood import OodScorer

    filled = {name: x for name, x in sets.items() if len(x)}
    if not filled:
        return {}
    scorer = OodScorer(Path(out_dir), spec, dim=next(iter(filled.values())).shape[1])
    return {name: round(float(np.mean(scores(scorer, x) > spec.threshold)), 4) for name, x in filled.items()}


def reference_from_records(
    records: Sequence[Recording],
    generated: Sequence[Recording],
    embedder: RecordingEmbedder,
    out_dir: Path,
    batch_size: int = 32,
) -> OutOfDistributionSpec:
    """The reference from every real training-side recording; flag rates on each dataset's test side and
    on the held-out generated clips (all together, and per generator)."""
    usable = embedder.usable([r for r in records if r.audio_path is not None])
    train = [r for r in usable if r.split == "train"]
    x, _ = embedder.embed(train, batch_size)
    spec = fit_reference(
        x,
        np.asarray([f"{r.dataset}/{r.subject_id}" for r in train]),
        out_dir,
        sound_types=np.asarray([sound_type(r) or "" for r in train]),
    )
    groups: dict[str, list[Recording]] = {}
    for record in usable:
        if record.split.startswith("test"):
            groups.setdefault(f"test/{record.dataset}", []).append(record)
    for record in embedder.usable([r for r in generated if r.split.startswith("test")]):
        groups.setdefault("generated", []).append(record)
        groups.setdefault(f"generated/{record.labels.get('generator')}", []).append(record)
    sets = {name: embedder.embed(group, batch_size)[0] for name, group in sorted(groups.items())}
    rates = flag_rates(out_dir, spec, sets)
    typed = {
        name: (x, [str(sound_type(r) or "") for r in groups[name]])
        for name, x in sets.items()
        if name.startswith("test/")
    }
    return spec.model_copy(update={"flag_rates": rates | own_type_flag_rates(out_dir, spec, typed)})


def own_type_flag_rates(
    out_dir: Path, spec: OutOfDistributionSpec, sets: dict[str, tuple[np.ndarray, list[str]]]
) -> dict[str, float]:
    """``own_type/<set>``: share of each set's recordings past their own sound type's threshold, among those
    whose type has one (how often the per-type check would overrule a right sound type)."""
    from acula.service.core.ood import OodScorer

    rates: dict[str, float] = {}
    scorer: OodScorer | None = None
    for name, (x, types) in sets.items():
        chosen = [
            (row, kind) for row, kind in zip(x, types, strict=True) if kind in spec.sound_type_thresholds
        ]
        if not chosen:
            continue
        scorer = scorer or OodScorer(Path(out_dir), spec, dim=x.shape[1])
        flagged = [_checked(scorer.score_as(row, kind)).flagged for row, kind in chosen]
        rates[f"own_type/{name}"] = round(float(np.mean(flagged)), 4)
    return rates
