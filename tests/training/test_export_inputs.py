"""What export reads from the rest of the project: probe tasks from the benchmark registry on real records."""

from __future__ import annotations

from pathlib import Path

import pytest

from acula.training.export.inputs import LICENCES, probe_tasks


@pytest.mark.slow
def test_probe_tasks_follow_the_benchmark_registry_and_its_splits(shared_data: Path) -> None:
    from acula.training.bench.tasks import TASKS
    from acula.training.data import load_records

    records = load_records(shared_data)
    tasks = {task.name: task for task in probe_tasks(records)}
    assert set(tasks) == set(TASKS)
    for name, task in tasks.items():
        bench = TASKS[name]
        assert all(r.split == "train" for r, _ in task.train), name
        assert all(r.split.startswith("test") for r, _ in task.test), name
        if "official" not in bench.schemes:  # SPRSound's official intra-patient test shares patients
            train_subjects = {r.subject_id for r, _ in task.train}
            assert not train_subjects & {r.subject_id for r, _ in task.test}, name
        assert task.kind == bench.kind, name
        if bench.kind in ("binary", "multiclass"):
            assert task.labels == list(bench.classes)
            assert {y for _, y in task.train} <= set(bench.classes)
        elif bench.kind == "multilabel":
            assert all(set(y) <= set(bench.classes) for _, y in task.train)
        else:
            assert task.unit == bench.unit
    assert len(tasks["sprsound-adventitious"].test) > 0 and len(tasks["physionet-abnormal"].train) > 1000


def test_every_dataset_adapter_has_a_licence() -> None:
    from acula.training.data import DATASETS

    for dataset in DATASETS:
        assert dataset in LICENCES, dataset
