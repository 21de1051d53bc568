"""Subject-level splits, defined once per dataset and shared by the trainer and the benchmark.

Rules (see ``../shared/data/README.md``, "Rules that keep the numbers honest"):

- SPRSound and ICBHI keep their official splits (SPRSound: train / test-intra / test-inter; ICBHI: train /
  test). CirCor has no audio: ``none``.
- Every other dataset holds out ~30% of its subjects as ``test`` (never seen by SSL or alignment), the rest
  ``train``. PhysioNet 2016 has no subject ids (a record is its subject); HLS-CMDS groups a mixture with its
  two components.
- EVERY subject of every dataset gets a ``fold`` 0..4, so the benchmark can run grouped 5-fold CV that
  evaluates only test-side subjects.

How: subjects are grouped into strata (a cheap label summary, so each fold and the test side see every
label), ordered within a stratum by a salted SHA-256 of the subject id, and dealt in that order: three of
every ten to ``test``, and folds round-robin within each side. The result is written to
``training/data/splits.json`` (committed) so later data cannot move an existing subject; a recording not
listed there (a user's fuller release) takes its subject's listed assignment, else :func:`hash_rule`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from acula.training.data.common import stable_fraction
from acula.training.data.records import Recording, Split

SALT = "acula-splits-v1"
TEST_FRACTION = 0.3
FOLDS = 5
OFFICIAL = {"sprsound", "icbhi2017"}
NO_AUDIO = {"circor2022"}
DEFAULT_FILE = Path(__file__).with_name("splits.json")
Assignment = tuple[Split, int]


def _labels_key(record: Recording, keys: Iterable[str]) -> str:
    return "|".join(f"{key}={record.labels.get(key)}" for key in keys)


STRATA: dict[str, Callable[[Recording], str]] = {
    "physionet2016": lambda r: _labels_key(r, ("set", "abnormal")),
    "bmd_hs": lambda r: _labels_key(r, ("AS", "AR", "MR", "MS", "N")),
    "coswara": lambda r: _labels_key(r, ("covid_status",)),
    "hls_cmds": lambda r: "mixture" if r.subject_id.startswith("mix_") else _labels_key(r, ("component",)),
    "icbhi2017": lambda r: _labels_key(r, ("diagnosis",)),
    "circor2022": lambda r: _labels_key(r, ("murmur",)),
}


def hash_rule(dataset: str, subject_id: str, official: Split) -> Assignment:
    """The deterministic rule for a subject absent from the splits file: salted hash of its id."""
    fold = int(stable_fraction(SALT + ":fold", f"{dataset}:{subject_id}") * FOLDS)
    if dataset in OFFICIAL or dataset in NO_AUDIO:
        return official, fold
    held_out = stable_fraction(SALT, f"{dataset}:{subject_id}") < TEST_FRACTION
    return ("test" if held_out else "train"), fold


def _rank(dataset: str, subject: str) -> tuple[float, str]:
    return stable_fraction(SALT, f"{dataset}:{subject}"), subject


def compute(
    dataset: str, records: list[Recording], keep: dict[str, Assignment] | None = None
) -> dict[str, Assignment]:
    """recording id -> (split, fold) for one dataset, stratified by subject as described above.

    ``keep`` (the dataset's entries of an existing splits file) is authoritative: its entries are returned
    unchanged, a subject with any listed recording keeps that assignment for all its recordings, and only
    subjects it does not know are dealt. So regenerating after the data changed (files added, or skipped
    as unusable) never moves a subject that a trained model or a benchmark has already seen on one side.
    """
    keep = keep or {}
    result: dict[str, Assignment] = dict(keep)
    known: dict[str, Assignment] = {}
    for record in records:
        if record.recording_id in keep:
            known.setdefault(record.subject_id, keep[record.recording_id])
    by_subject: dict[str, list[Recording]] = defaultdict(list)
    for record in records:
        if record.recording_id in keep:
            continue
        if record.subject_id in known:
            split, fold = known[record.subject_id]
            official = dataset in OFFICIAL or dataset in NO_AUDIO  # the release's own split always wins
            result[record.recording_id] = (record.split if official else split, fold)
        else:
            by_subject[record.subject_id].append(record)
    stratum_of = STRATA.get(dataset, lambda r: "")
    strata: dict[str, list[str]] = defaultdict(list)
    for subject, recs in by_subject.items():
        strata[stratum_of(recs[0])].append(subject)
    # Deal subjects stratum by stratum (each ordered by hash): every 10 consecutive subjects put 3 on the
    # test side, so each stratum is ~30% test even when small; folds are dealt separately within each side,
    # so every fold holds test-side subjects of every stratum.
    order = [s for key in sorted(strata) for s in sorted(strata[key], key=lambda s: _rank(dataset, s))]
    held_out = {s: int((i + 1) * TEST_FRACTION) > int(i * TEST_FRACTION) for i, s in enumerate(order)}
    per_subject: dict[str, tuple[bool, int]] = {}
    for side in (True, False):
        for i, subject in enumerate(s for s in order if held_out[s] == side):
            per_subject[subject] = (side, i % FOLDS)
    for subject, recs in by_subject.items():
        is_test, fold = per_subject[subject]
        for record in recs:
            official = dataset in OFFICIAL or dataset in NO_AUDIO
            dealt: Split = record.split if official else ("test" if is_test else "train")
            result[record.recording_id] = (dealt, fold)
    return result


def apply(dataset: str, records: list[Recording], listed: dict[str, Assignment]) -> list[Recording]:
    """Records with split and fold from ``listed``; unlisted ones take their subject's or the hash rule."""
    subject_listed: dict[str, Assignment] = {}
    for record in records:
        if record.recording_id in listed and dataset not in OFFICIAL:
            subject_listed.setdefault(record.subject_id, listed[record.recording_id])
    out = []
    for record in records:
        split, fold = (
            listed.get(record.recording_id)
            or subject_listed.get(record.subject_id)
            or hash_rule(dataset, record.subject_id, record.split)
        )
        if dataset in OFFICIAL or dataset in NO_AUDIO:
            split = record.split  # the release's own split always wins
        out.append(record.model_copy(update={"split": split, "fold": fold}))
    return out


def compute_all(
    results: dict[str, list[Recording]], keep: dict[str, dict[str, Assignment]] | None = None
) -> dict[str, dict[str, Assignment]]:
    """Assignments for every dataset from records read WITHOUT splits applied (adapter output); ``keep``:
    an existing splits file's assignments, kept as they are (see :func:`compute`)."""
    keep = keep or {}
    return {dataset: compute(dataset, records, keep.get(dataset)) for dataset, records in results.items()}


def read(path: Path = DEFAULT_FILE) -> dict[str, dict[str, Assignment]]:
    """dataset -> recording id -> (split, fold); empty when the file does not exist yet."""
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    return {ds: {rid: (v[0], int(v[1])) for rid, v in recs.items()} for ds, recs in raw["datasets"].items()}


def write(assignments: dict[str, dict[str, Assignment]], path: Path) -> None:
    """A sorted JSON file, one recording per line (stable diffs): dataset -> recording -> [split, fold]."""
    payload = {
        "salt": SALT,
        "test_fraction": TEST_FRACTION,
        "folds": FOLDS,
        "rule": "training/data/splits.py",
        "datasets": {
            ds: {rid: list(assignments[ds][rid]) for rid in sorted(assignments[ds])}
            for ds in sorted(assignments)
        },
    }
    head = {key: payload[key] for key in ("salt", "test_fraction", "folds", "rule")}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + ['  "datasets": {']
    datasets = payload["datasets"]
    assert isinstance(datasets, dict)
    for i, ds in enumerate(datasets):
        lines.append(f"    {json.dumps(ds)}: {{")
        items = list(datasets[ds].items())
        for j, (rid, value) in enumerate(items):
            comma = "," if j < len(items) - 1 else ""
            lines.append(f"      {json.dumps(rid)}: {json.dumps(value)}{comma}")
        lines.append("    }" + ("," if i < len(datasets) - 1 else ""))
    lines += ["  }", "}"]
    path.write_text("\n".join(lines) + "\n")
