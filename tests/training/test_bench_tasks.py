"""The task registry on the real data: labels, split sizes, and no subject on both sides of any split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from acula.training.bench.tasks import TASKS, EvalSplit, TaskData, check_split, flag, is_test_side, task_data
from acula.training.data.records import Recording


def test_flag_reads_the_release_encodings():
    assert [flag(v) for v in (True, 1, "1", -1, 0, "no", "Abnormal")] == [1, 1, 1, 0, 0, 0, 1]
    assert flag(None) is None and flag("maybe") is None and flag(float("nan")) is None


class _Meta(BaseModel):
    pass


def _record(subject: str, split: str) -> Recording:
    return Recording(
        dataset="d",
        recording_id=f"{subject}-{split}",
        subject_id=subject,
        audio_path=Path("/x.wav"),
        native_rate=4000,
        duration_s=1.0,
        split=split,
        metadata=_Meta(),
    )


def test_check_split_refuses_shared_subjects_and_training_side_evaluation():
    records = [_record("s1", "train"), _record("s1", "test"), _record("s2", "test"), _record("s3", "train")]
    data = TaskData(TASKS["coswara-sex"], records, np.array([0, 1, 0, 1]), np.array(["s1", "s1", "s2", "s3"]))
    with pytest.raises(ValueError, match="both sides"):
        check_split(data, EvalSplit("bad", "grouped-cv", np.array([0]), {"all": np.array([1])}))
    with pytest.raises(ValueError, match="training-side"):
        check_split(data, EvalSplit("bad", "grouped-cv", np.array([2]), {"all": np.array([3])}))
    check_split(data, EvalSplit("good", "grouped-cv", np.array([0, 3]), {"all": np.array([2])}))


@pytest.fixture(scope="module")
def records(shared_data: Path) -> list[Recording]:
    from acula.training.data import load_records

    datasets = sorted({task.dataset for task in TASKS.values()})
    return load_records(shared_data, datasets=datasets)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_splits_on_real_data(records: list[Recording], name: str) -> None:
    task = TASKS[name]
    data = task_data(task, records)
    labelled = [r for r in records if r.dataset == task.dataset and r.audio_path is not None]
    labelled = [r for r in labelled if task.label(r) is not None]
    assert len(data.records) == len(labelled) > 0
    test_side = {r.recording_id for r in data.records if is_test_side(r)}
    assert test_side, f"{name}: no test-side recording"
    splits = data.splits()
    for scheme in task.schemes:
        group = [s for s in splits if s.scheme == scheme]
        assert group, f"{name}: scheme {scheme} produced no split"
        evaluated = np.concatenate([s.evaluate["all"] for s in group])
        # Every test-side recording is evaluated exactly once per scheme, and nothing else is.
        assert sorted(data.records[i].recording_id for i in evaluated) == sorted(test_side)
        for split in group:
            train_subjects = set(data.groups[split.train])
            for subset, rows in split.evaluate.items():
                if subset in task.shared_subject_subsets or (subset == "all" and task.shared_subject_subsets):
                    continue  # SPRSound's intra-patient test set: shared by the release's design
                assert not train_subjects & set(data.groups[rows])
            if task.kind in ("binary", "multiclass"):
                assert len(set(data.y[split.train].tolist())) == len(task.classes)
    if "official" in task.schemes:
        official = next(s for s in splits if s.scheme == "official")
        counts = Counter(r.split for r in data.records)
        assert len(official.train) == counts["train"]
        for subset, rows in official.evaluate.items():
            assert len(rows) == (len(test_side) if subset == "all" else counts[subset])
        assert {"test-intra", "test-inter"} <= set(official.evaluate)
        inter = set(data.groups[official.evaluate["test-inter"]])
        assert inter and not inter & set(data.groups[official.train])  # the subject-disjoint test set
    if "grouped-cv" in task.schemes:
        folds = [s for s in splits if s.scheme == "grouped-cv"]
        assert len(folds) == 5
        for split in folds:  # the probe trains on every recording that is not evaluated
            assert len(split.train) + len(split.evaluate["all"]) == len(data.records)
    if "lodo" in task.schemes:
        sources = {str(r.labels.get(task.group_key)) for r in data.records}
        assert len([s for s in splits if s.scheme == "lodo"]) == len(sources) >= 2


@pytest.mark.slow
def test_sprsound_labels_match_the_release(records: list[Recording]) -> None:
    """Poor Quality is excluded from the classification tasks only; the age task keeps it."""
    spr = [r for r in records if r.dataset == "sprsound"]
    poor = sum(r.labels.get("record_label") == "Poor Quality" for r in spr)
    assert poor > 0
    assert len(task_data(TASKS["sprsound-adventitious"], records).records) == len(spr) - poor
    assert len(task_data(TASKS["sprsound-record4"], records).records) == len(spr) - poor
    ages = task_data(TASKS["sprsound-age"], records).y
    assert len(ages) == len(spr) and ages.min() > 0 and ages.max() <= 18.5


def test_only_named_subsets_may_share_subjects():
    records = [_record("s1", "train"), _record("s1", "test-intra"), _record("s2", "test-inter")]
    groups = np.array(["s1", "s1", "s2"])
    data = TaskData(TASKS["sprsound-adventitious"], records, np.array([0, 1, 0]), groups)
    ok = {"test-intra": np.array([1]), "test-inter": np.array([2]), "all": np.array([1, 2])}
    check_split(data, EvalSplit("official", "official", np.array([0]), ok))
    bad = {"test-inter": np.array([1]), "all": np.array([1])}  # a training patient in the inter-patient set
    with pytest.raises(ValueError, match="both sides"):
        check_split(data, EvalSplit("official", "official", np.array([0]), bad))
