"""Subject-level splits on the real data: no subject on both sides, deterministic, equal to the committed
``training/data/splits.json``, ~30% held out, every subject in a fold, and the rule for unlisted records."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from acula.training.data import load_datasets
from acula.training.data import splits as splits_module
from acula.training.data.common import AdapterResult
from acula.training.data.records import Recording

pytestmark = pytest.mark.slow
GROUPED = ("physionet2016", "bmd_hs", "coswara", "hls_cmds")


@pytest.fixture(scope="module")
def raw(shared_data: Path) -> dict[str, AdapterResult]:
    """Adapter output without splits applied."""
    return load_datasets(shared_data, apply_splits=False)


@pytest.fixture(scope="module")
def split_records(shared_data: Path) -> dict[str, list[Recording]]:
    return {name: result.records for name, result in load_datasets(shared_data).items()}


def _subjects(records: list[Recording]) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = defaultdict(set)
    for record in records:
        sides[record.split].add(record.subject_id)
    return sides


def test_no_subject_on_both_sides(split_records: dict[str, list[Recording]]) -> None:
    for dataset, records in split_records.items():
        sides = _subjects(records)
        train = sides.get("train", set())
        for split, subjects in sides.items():
            if split == "train" or (dataset == "sprsound" and split == "test-intra"):
                continue  # SPRSound's official intra-patient test set shares patients with train by design
            assert not (train & subjects), f"{dataset}: subjects in train and {split}"
    spr = _subjects(split_records["sprsound"])
    assert spr["test-intra"] <= spr["train"] and not (spr["test-inter"] & spr["test-intra"])


def test_every_subject_has_one_split_and_fold(split_records: dict[str, list[Recording]]) -> None:
    for dataset, records in split_records.items():
        seen: dict[str, tuple[str, int | None]] = {}
        for record in records:
            assert record.fold in range(5), f"{dataset}:{record.recording_id} has no fold"
            key = record.subject_id
            value = (record.split, record.fold)
            if dataset == "sprsound":
                value = ("any", record.fold)  # official splits are per recording; folds are per subject
            assert seen.setdefault(key, value) == value, f"{dataset}: subject {key} split across sides"


def test_grouped_datasets_hold_out_about_30_percent_in_every_fold(
    split_records: dict[str, list[Recording]],
) -> None:
    for dataset in GROUPED:
        sides = _subjects(split_records[dataset])
        fraction = len(sides["test"]) / (len(sides["test"]) + len(sides["train"]))
        assert 0.27 <= fraction <= 0.33, (dataset, fraction)
        test_folds = defaultdict(set)
        for record in split_records[dataset]:
            if record.split == "test":
                test_folds[record.fold].add(record.subject_id)
        sizes = [len(test_folds[k]) for k in range(5)]
        assert max(sizes) - min(sizes) <= 1, (dataset, sizes)  # folds dealt evenly on the test side


def test_stratified_by_label(split_records: dict[str, list[Recording]]) -> None:
    records = split_records["physionet2016"]
    for value in (True, False):
        part = [r for r in records if r.labels["abnormal"] is value]
        fraction = sum(r.split == "test" for r in part) / len(part)
        assert 0.28 <= fraction <= 0.32


def test_splits_are_deterministic_and_match_the_committed_file(raw: dict[str, AdapterResult]) -> None:
    first = splits_module.compute_all({name: result.records for name, result in raw.items()})
    second = splits_module.compute_all({name: list(reversed(result.records)) for name, result in raw.items()})
    assert first == second
    committed = splits_module.read()
    assert committed, "training/data/splits.json is missing: run `acula data splits`"
    kept = splits_module.compute_all({name: result.records for name, result in raw.items()}, committed)
    assert kept == committed, (
        "splits.json is stale: regenerate with `acula data splits --root ../shared/data`"
    )
    for dataset, result in raw.items():  # every record is listed; extra: Coswara's 22 silent files
        listed = set(committed[dataset])
        assert {r.recording_id for r in result.records} <= listed
        extra = listed - {r.recording_id for r in result.records}
        assert len(extra) == (22 if dataset == "coswara" else 0), dataset


def test_regenerating_never_moves_a_known_subject(raw: dict[str, AdapterResult]) -> None:
    records = raw["bmd_hs"].records
    committed = splits_module.read()["bmd_hs"]
    # Drop a whole subject (as Coswara's silent files were dropped) and add a new one: a fresh deal would
    # shift everyone after it; keeping the committed file moves nobody and deals only the newcomer.
    gone = records[0].subject_id
    newcomer = records[0].model_copy(update={"recording_id": "XX_999_sit_Aor", "subject_id": "patient_999"})
    changed = [r for r in records if r.subject_id != gone] + [newcomer]
    fresh = splits_module.compute("bmd_hs", changed)
    assert any(fresh[rid] != committed[rid] for rid in fresh if rid in committed)
    kept = splits_module.compute("bmd_hs", changed, committed)
    assert all(kept[rid] == committed[rid] for rid in committed)
    assert kept["XX_999_sit_Aor"][0] in ("train", "test") and kept["XX_999_sit_Aor"][1] in range(5)
    # A new recording of a known subject joins that subject's side and fold.
    extra = records[1].model_copy(update={"recording_id": records[1].recording_id + "_b"})
    again = splits_module.compute("bmd_hs", [*records, extra], committed)
    assert again[extra.recording_id] == committed[records[1].recording_id]


def test_written_file_round_trips(raw: dict[str, AdapterResult], tmp_path: Path) -> None:
    assignments = splits_module.compute_all({"bmd_hs": raw["bmd_hs"].records})
    path = tmp_path / "splits.json"
    splits_module.write(assignments, path)
    assert splits_module.read(path) == assignments


def test_unlisted_recordings_follow_their_subject_or_the_hash_rule(raw: dict[str, AdapterResult]) -> None:
    records = raw["bmd_hs"].records
    listed = splits_module.compute("bmd_hs", records)
    dropped = records[0]
    partial = {rid: value for rid, value in listed.items() if rid != dropped.recording_id}
    applied = {r.recording_id: (r.split, r.fold) for r in splits_module.apply("bmd_hs", records, partial)}
    assert applied[dropped.recording_id] == listed[dropped.recording_id]  # takes its subject's assignment
    stranger = dropped.model_copy(update={"recording_id": "new_recording", "subject_id": "patient_999"})
    (new,) = splits_module.apply("bmd_hs", [stranger], partial)
    assert (new.split, new.fold) == splits_module.hash_rule("bmd_hs", "patient_999", "train")
    assert (new.split, new.fold) == splits_module.hash_rule("bmd_hs", "patient_999", "train")  # stable


def test_official_splits_are_never_overridden(split_records: dict[str, list[Recording]]) -> None:
    icbhi = {r.recording_id: r.split for r in split_records["icbhi2017"]}
    assert icbhi["101_1b1_Al_sc_Meditron"] == "test"
    assert sum(split == "train" for split in icbhi.values()) == 1


def test_hls_mixture_components_share_a_side(split_records: dict[str, list[Recording]]) -> None:
    groups: dict[str, set[str]] = defaultdict(set)
    for record in split_records["hls_cmds"]:
        groups[record.subject_id].add(record.split)
    assert all(len(sides) == 1 for sides in groups.values())
