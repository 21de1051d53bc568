"""What export reads from the rest of the project: records, benchmark tasks, reports, the validator, licences.

Export itself depends only on plain values (records, :class:`ProbeTask` with targets, report dicts, a check
function), so it can be tested with hand-built inputs; :func:`gather` is the one place that knows the
dataset adapters, the benchmark's task registry and the report validator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acula.service.bundle import ProbeDomain, ProbePurpose
from acula.training.bench.metrics import TaskKind
from acula.training.data.records import Recording

# From each release's licence file (see ../shared/data/README.md); recorded in every bundle's provenance.
LICENCES = {
    "sprsound": "GPL-3.0",
    "physionet2016": "ODC-By 1.0",
    "bmd_hs": "released publicly by its authors; no licence file",
    "coswara": "CC BY 4.0",
    "hls_cmds": "CC BY 4.0 (simulated manikin, not patients)",
    "icbhi2017": "CC0",
    "circor2022": "ODC-By 1.0",
}


@dataclass
class ProbeTask:
    """One probe to fit: recordings with targets on each side of its subject split.

    Targets: a class name (binary, multiclass), the list of present label names (multilabel), or a float.
    """

    name: str
    kind: TaskKind
    train: list[tuple[Recording, Any]]
    test: list[tuple[Recording, Any]]
    labels: list[str] = field(default_factory=list)
    unit: str | None = None
    description: str = ""
    domain: ProbeDomain = field(default_factory=ProbeDomain)  # where its answer applies (manifest)
    purpose: ProbePurpose = "diagnostic"

    def with_recordings(
        self, train: list[tuple[Recording, Any]], test: list[tuple[Recording, Any]]
    ) -> ProbeTask:
        return dataclasses.replace(self, train=train, test=test)


@dataclass
class ExportInputs:
    records: list[Recording]
    tasks: list[ProbeTask]
    reports: list[dict[str, Any]] | None
    check: Callable[[str], list[str]]
    licences: dict[str, str]


def _as_dict(report: Any) -> dict[str, Any]:
    if isinstance(report, dict):
        return report
    if hasattr(report, "model_dump"):
        return report.model_dump(mode="json")
    raise TypeError(f"cannot read a report of type {type(report).__name__}")


def read_reports(path: Path) -> list[dict[str, Any]]:
    from acula.training.train.pairs import read_reports as read

    return [_as_dict(r) for r in read(Path(path))]


def identifying_check() -> Callable[[str], list[str]]:
    """The report validator's identifying-information check (names, dates, ids)."""
    from acula.training.reports.validator import check_identifying_information

    return check_identifying_information


def _probe_target(task: Any, label: Any) -> Any:
    """A benchmark label as export's probes read it: a class name, the present label names, or a float."""
    if task.kind in ("binary", "multiclass"):
        return task.classes[int(label)]
    if task.kind == "multilabel":
        return [name for name, present in zip(task.classes, label, strict=True) if present]
    return float(label)


def probe_tasks(records: Sequence[Recording]) -> list[ProbeTask]:
    """One probe per benchmark task (``training.bench.tasks.TASKS``): fitted on the task's training-side
    recordings, scored on its test-side ones (every test split together), as the service will use it."""
    from acula.training.bench.tasks import TASKS

    tasks = []
    for task in TASKS.values():
        train: list[tuple[Recording, Any]] = []
        test: list[tuple[Recording, Any]] = []
        for record in records:
            if record.dataset != task.dataset or record.audio_path is None:
                continue
            label = task.label(record)
            if label is None:
                continue
            side = train if record.split == "train" else test if record.split.startswith("test") else None
            if side is not None:
                side.append((record, _probe_target(task, label)))
        if train and test:
            tasks.append(
                ProbeTask(
                    name=task.name,
                    kind=task.kind,
                    train=train,
                    test=test,
                    labels=list(task.classes) if task.kind != "regression" else [],
                    unit=task.unit,
                    description=task.description,
                    domain=task.domain,
                    purpose=task.purpose,
                )
            )
    return tasks


def gather(root: Path, reports: Path | None, datasets: list[str] | None = None) -> ExportInputs:
    from acula.training.data import load_records

    records = list(load_records(Path(root), datasets))
    return ExportInputs(
        records=records,
        tasks=probe_tasks(records),
        reports=read_reports(reports) if reports is not None else None,
        check=identifying_check(),
        licences=dict(LICENCES),
    )
