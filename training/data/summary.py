"""Per-dataset counts (recordings, subjects, hours, label counts per split) for ``acula data summary``.

The numbers are the ones the data README states, so a user can check that an adapter read their copy of a
release completely, and the tests check the adapters the same way.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from acula.training.data.common import AdapterResult
from acula.training.data.records import Recording

# Which labels are counted per dataset (categorical ones; a list label counts each element).
SUMMARY_LABELS: dict[str, tuple[str, ...]] = {
    "sprsound": ("record_label",),
    "physionet2016": ("abnormal", "set"),
    "bmd_hs": ("AS", "AR", "MR", "MS", "N"),
    "coswara": ("covid_status", "sex", "sound_type"),
    "hls_cmds": ("component", "heart_sound", "lung_sound"),
    "icbhi2017": ("diagnosis", "crackles", "wheezes"),
    "circor2022": ("murmur", "outcome", "age_group"),
}


def _label_counts(dataset: str, records: list[Recording]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        for key in SUMMARY_LABELS.get(dataset, ()):
            value = record.labels.get(key)
            values = value if isinstance(value, list) else [value]
            for item in values:
                counts[key]["unlabelled" if item is None else str(item)] += 1
    return {key: dict(sorted(c.items())) for key, c in counts.items()}


def _block(dataset: str, records: list[Recording]) -> dict[str, Any]:
    seconds = sum(r.duration_s or 0.0 for r in records)
    return {
        "recordings": len(records),
        "subjects": len({r.subject_id for r in records}),
        "hours": round(seconds / 3600, 3),
        "labels": _label_counts(dataset, records),
    }


def summarize(results: dict[str, AdapterResult]) -> dict[str, Any]:
    """dataset -> totals, ``splits`` (split -> the same block) and ``skipped`` (reason -> count)."""
    out: dict[str, Any] = {}
    for dataset, result in results.items():
        by_split: dict[str, list[Recording]] = defaultdict(list)
        for record in result.records:
            by_split[record.split].append(record)
        reasons = Counter(skip.reason.split(":")[0] for skip in result.skipped)
        out[dataset] = _block(dataset, result.records) | {
            "rates_hz": sorted({r.native_rate for r in result.records if r.native_rate}),
            "splits": {split: _block(dataset, recs) for split, recs in sorted(by_split.items())},
            "skipped": dict(sorted(reasons.items())),
            # what the release lists or holds: recordings + skipped (Coswara: 274 + 30 = the README's 304)
            "in_release": len(result.records) + len(result.skipped),
        }
    return out
