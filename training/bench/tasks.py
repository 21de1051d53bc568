"""The benchmark task registry: what is predicted, from which recordings, split how.

A task is one :class:`Task` entry: a dataset, a label function (recording -> label, or None to leave the
recording out), a kind, a split scheme and class descriptions for zero-shot scoring. Adding a dataset of
your own is one more entry in :data:`TASKS` (or a call to :func:`register`).

Split schemes (the recordings' ``split`` and ``fold`` come from ``training.data``, at subject level):

- ``official``: the probe trains on ``split == "train"`` and is evaluated on every test split, each alone
  (SPRSound: ``test-intra``, ``test-inter``) and together (``all``). SPRSound's intra-patient test set holds
  other recordings of TRAINING patients by the release's design; its inter-patient set is the
  subject-disjoint number, and the only one comparable with the cross-validated tasks.
- ``grouped-cv``: for each fold k, the probe is evaluated on the TEST-side recordings of fold k only and
  trains on every other recording (other folds, and fold k's training-side subjects). The encoder never
  saw a test-side recording, so evaluating on train-side ones would flatter it; the probe, being trained
  per split, may use any other subject.
- ``lodo``: leave one source out (``group_key`` in the labels, e.g. PhysioNet's database a..f): train on the
  other sources, evaluate on the test-side recordings of the held-out one.

Every split is checked at construction: no subject on both sides, no evaluation recording ever seen by the
encoder's training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from acula.service.bundle import ProbeDomain, ProbePurpose
from acula.training.bench.metrics import TaskKind
from acula.training.data.records import Recording

Scheme = Literal["official", "grouped-cv", "lodo"]
Label = int | float | tuple[int, ...]


def flag(value: object) -> int | None:
    """Booleans, 0/1, '1'/'0', 'yes'/'no', 1/-1 (PhysioNet) -> 1/0; anything else -> None (left out)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and np.isnan(value)):
        return 1 if value == 1 else 0 if value in (0, -1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "y", "abnormal", "present"):
            return 1
        if text in ("0", "-1", "false", "no", "n", "normal", "absent"):
            return 0
    return None


def _text(rec: Recording, key: str) -> str | None:
    value = rec.labels.get(key)
    return str(value).strip() if value not in (None, "") else None


@dataclass(frozen=True)
class Task:
    """One benchmark task; see the module docstring for the split schemes."""

    name: str
    dataset: str
    kind: TaskKind
    label: Callable[[Recording], Label | None]
    classes: tuple[str, ...]  # binary: (negative, positive); multiclass: by index; multilabel: label names
    schemes: tuple[Scheme, ...]
    description: str
    # Zero-shot: one description per class (binary: negative, positive; multilabel: absent/present per
    # label), phrased as the template report writer (training.reports.template) words that finding.
    prompts: tuple[str, ...] = ()
    group_key: str | None = None  # labels[group_key] names the source for the ``lodo`` scheme
    # Evaluated subsets whose subjects MAY also be on the training side, by the release's own design
    # (SPRSound's intra-patient test set); every other subset is checked to be subject-disjoint.
    shared_subject_subsets: tuple[str, ...] = ()
    unit: str | None = None
    # Where the probe's answer applies (sound type, population, dataset, recording conditions), and whether
    # /predict runs it on every applicable upload (diagnostic, quality) or only when asked (demographic).
    domain: ProbeDomain = field(default_factory=ProbeDomain)
    purpose: ProbePurpose = "diagnostic"

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "regression" else len(self.classes)

    def label_text(self, label: Label) -> str:
        """A label as a short string (retrieval counts a hit when these are equal)."""
        if self.kind == "multilabel":
            present = [name for name, v in zip(self.classes, label, strict=True) if v]  # type: ignore[arg-type]
            return "+".join(present) or "none"
        if self.kind == "regression":
            return f"{float(label):.1f}"  # type: ignore[arg-type]
        return self.classes[int(label)]  # type: ignore[arg-type]


# --- label functions -------------------------------------------------------------------------------------
SPR_CLASSES = ("Normal", "CAS", "DAS", "CAS & DAS")


def spr_adventitious(rec: Recording) -> int | None:
    label = _text(rec, "record_label")
    return None if label not in SPR_CLASSES else int(label != "Normal")


def spr_record4(rec: Recording) -> int | None:
    label = _text(rec, "record_label")
    return SPR_CLASSES.index(label) if label in SPR_CLASSES else None


def spr_poor_quality(rec: Recording) -> int | None:
    label = _text(rec, "record_label")
    return None if label is None else int(label == "Poor Quality")


def spr_age(rec: Recording) -> float | None:
    value = rec.labels.get("age_years")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def physionet_abnormal(rec: Recording) -> int | None:
    return flag(rec.labels.get("abnormal"))


BMD_VALVES = ("AS", "AR", "MR", "MS")


def bmd_valve(rec: Recording) -> tuple[int, ...] | None:
    flags = [flag(rec.labels.get(name)) for name in BMD_VALVES]
    return None if any(f is None for f in flags) else tuple(int(f) for f in flags)  # type: ignore[arg-type]


def coswara_poor_quality(rec: Recording) -> int | None:
    """Annotators' quality 0 (bad) vs 1-2 (good, excellent); unannotated recordings are left out."""
    value = rec.labels.get("quality")
    return None if not isinstance(value, int | float) else int(value == 0)


def coswara_sex(rec: Recording) -> int | None:
    sex = (_text(rec, "sex") or "").lower()
    return {"male": 0, "m": 0, "female": 1, "f": 1}.get(sex)


TASKS: dict[str, Task] = {}

SPRSOUND = ProbeDomain(
    sound_types=["lung"], population="paediatric", dataset="sprsound", conditions="stethoscope"
)
PHYSIONET = ProbeDomain(
    sound_types=["heart"], population="mixed", dataset="physionet2016", conditions="stethoscope"
)
BMD_HS = ProbeDomain(sound_types=["heart"], population="adult", dataset="bmd_hs", conditions="stethoscope")
COSWARA = ProbeDomain(
    sound_types=["cough", "breathing"], population="adult", dataset="coswara", conditions="smartphone"
)


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


register(
    Task(
        "sprsound-adventitious",
        "sprsound",
        "binary",
        spr_adventitious,
        ("normal", "adventitious"),
        ("official",),
        "SPRSound: any adventitious sound (CAS, DAS or both) vs normal; Poor Quality left out.",
        shared_subject_subsets=("test-intra",),
        prompts=(
            "Paediatric lung auscultation. Normal breath sounds; no adventitious sounds heard. "
            "Impression: normal lung sounds.",
            "Paediatric lung auscultation. Adventitious sounds are heard: wheezes, rhonchi or crackles. "
            "Impression: adventitious lung sounds.",
        ),
        domain=SPRSOUND,
    )
)
register(
    Task(
        "sprsound-record4",
        "sprsound",
        "multiclass",
        spr_record4,
        SPR_CLASSES,
        ("official",),
        "SPRSound record label: Normal / CAS / DAS / CAS & DAS (macro one-vs-rest AUROC).",
        shared_subject_subsets=("test-intra",),
        prompts=(
            "Paediatric lung auscultation. Normal breath sounds; no adventitious sounds heard. "
            "Impression: normal lung sounds.",
            "Paediatric lung auscultation. Continuous adventitious sounds are heard: wheezes. "
            "Impression: continuous adventitious sounds (CAS).",
            "Paediatric lung auscultation. Discontinuous adventitious sounds are heard: fine crackles. "
            "Impression: discontinuous adventitious sounds (DAS).",
            "Paediatric lung auscultation. Continuous adventitious sounds and discontinuous adventitious "
            "sounds are heard: wheezes and crackles. Impression: CAS & DAS pattern.",
        ),
        domain=SPRSOUND,
    )
)
register(
    Task(
        "sprsound-age",
        "sprsound",
        "regression",
        spr_age,
        (),
        ("official",),
        "SPRSound: the child's age in years from lung sounds (MAE).",
        shared_subject_subsets=("test-intra",),
        unit="years",
        domain=SPRSOUND,
        purpose="demographic",
    )
)
register(
    Task(
        "physionet-abnormal",
        "physionet2016",
        "binary",
        physionet_abnormal,
        ("normal", "abnormal"),
        ("grouped-cv", "lodo"),
        "PhysioNet/CinC 2016: abnormal vs normal heart sound recording.",
        prompts=(
            "Heart sound recording (phonocardiogram). Classified as normal.",
            "Heart sound recording (phonocardiogram). Classified as abnormal.",
        ),
        group_key="set",
        domain=PHYSIONET,
    )
)
register(
    Task(
        "bmd-valve",
        "bmd_hs",
        "multilabel",
        bmd_valve,
        BMD_VALVES,
        ("grouped-cv",),
        "BMD-HS: aortic stenosis, aortic regurgitation, mitral regurgitation, mitral stenosis (macro AUROC).",
        prompts=(
            "Cardiac auscultation. No valvular disease; the heart is reported normal.",
            "Cardiac auscultation. Known diagnosis: aortic stenosis.",
            "Cardiac auscultation. No valvular disease; the heart is reported normal.",
            "Cardiac auscultation. Known diagnosis: aortic regurgitation.",
            "Cardiac auscultation. No valvular disease; the heart is reported normal.",
            "Cardiac auscultation. Known diagnosis: mitral regurgitation.",
            "Cardiac auscultation. No valvular disease; the heart is reported normal.",
            "Cardiac auscultation. Known diagnosis: mitral stenosis.",
        ),
        domain=BMD_HS,
    )
)
register(
    Task(
        "coswara-sex",
        "coswara",
        "binary",
        coswara_sex,
        ("male", "female"),
        ("grouped-cv",),
        "Coswara: participant sex from cough and breathing sounds (all four sound types).",
        prompts=("Participant: adult man.", "Participant: adult woman."),
        domain=COSWARA,
        purpose="demographic",
    )
)

register(
    Task(
        "sprsound-quality",
        "sprsound",
        "binary",
        spr_poor_quality,
        ("usable", "poor quality"),
        ("official",),
        "SPRSound: recordings the annotators marked Poor Quality vs every other record label.",
        shared_subject_subsets=("test-intra",),
        domain=SPRSOUND,
        purpose="quality",
    )
)
register(
    Task(
        "coswara-quality",
        "coswara",
        "binary",
        coswara_poor_quality,
        ("usable", "poor quality"),
        ("grouped-cv",),
        "Coswara: annotators' quality 0 (bad) vs 1-2 (good, excellent) of cough and breathing sounds.",
        domain=COSWARA,
        purpose="quality",
    )
)


# --- splits ----------------------------------------------------------------------------------------------
@dataclass
class EvalSplit:
    """Row indices into the task's labelled recordings: probe training side and evaluated subsets."""

    name: str  # e.g. "official", "fold-2", "lodo-e"
    scheme: Scheme
    train: np.ndarray
    evaluate: dict[str, np.ndarray] = field(default_factory=dict)  # subset name -> rows ("all" always)


@dataclass
class TaskData:
    """The recordings a task uses (label not None, audio present) and their labels as arrays."""

    task: Task
    records: list[Recording]
    y: np.ndarray  # (n,) int/float, or (n, L) int for multilabel
    groups: np.ndarray  # subject ids

    def splits(self) -> list[EvalSplit]:
        out: list[EvalSplit] = []
        for scheme in self.task.schemes:
            out += _SCHEMES[scheme](self)
        for split in out:
            check_split(self, split)
        return out


def is_test_side(rec: Recording) -> bool:
    return rec.split.startswith("test")


def _official(data: TaskData) -> list[EvalSplit]:
    train = np.asarray([i for i, r in enumerate(data.records) if r.split == "train"], dtype=int)
    names = sorted({r.split for r in data.records if is_test_side(r)})
    evaluate: dict[str, np.ndarray] = {
        name: np.asarray([i for i, r in enumerate(data.records) if r.split == name], dtype=int)
        for name in names
    }
    evaluate["all"] = np.asarray([i for i, r in enumerate(data.records) if is_test_side(r)], dtype=int)
    return [EvalSplit("official", "official", train, evaluate)]


def _grouped_cv(data: TaskData) -> list[EvalSplit]:
    folds = sorted({r.fold for r in data.records if r.fold is not None})
    if not folds:
        raise ValueError(f"{data.task.name}: records have no fold; the grouped-cv scheme needs them")
    out = []
    for k in folds:
        evaluate = [i for i, r in enumerate(data.records) if r.fold == k and is_test_side(r)]
        held = set(evaluate)
        train = [i for i, r in enumerate(data.records) if r.fold is not None and i not in held]
        if evaluate:
            rows = {"all": np.asarray(evaluate, dtype=int)}
            out.append(EvalSplit(f"fold-{k}", "grouped-cv", np.asarray(train, dtype=int), rows))
    return out


def _lodo(data: TaskData) -> list[EvalSplit]:
    key = data.task.group_key
    if key is None:
        raise ValueError(f"{data.task.name}: the lodo scheme needs a group_key")
    sources = [str(r.labels.get(key)) for r in data.records]
    out = []
    for source in sorted(set(sources)):
        evaluate = [i for i, r in enumerate(data.records) if sources[i] == source and is_test_side(r)]
        train = [i for i in range(len(data.records)) if sources[i] != source]
        if evaluate:
            rows = {"all": np.asarray(evaluate, dtype=int)}
            out.append(EvalSplit(f"lodo-{source}", "lodo", np.asarray(train, dtype=int), rows))
    return out


_SCHEMES: dict[Scheme, Callable[[TaskData], list[EvalSplit]]] = {
    "official": _official,
    "grouped-cv": _grouped_cv,
    "lodo": _lodo,
}


def check_split(data: TaskData, split: EvalSplit) -> None:
    """Refuse a split that would flatter an encoder: shared subjects, or train-side rows evaluated.

    Only the subsets a task names in ``shared_subject_subsets`` may share subjects with the training side
    (and "all" only through the rows of those subsets).
    """
    train_subjects = set(data.groups[split.train])
    allowed = {int(i) for name in data.task.shared_subject_subsets for i in split.evaluate.get(name, [])}
    for name, rows in split.evaluate.items():
        if name in data.task.shared_subject_subsets:
            continue
        shared = train_subjects & set(data.groups[[i for i in rows if int(i) not in allowed]])
        if shared:
            raise ValueError(
                f"{data.task.name}/{split.name}/{name}: {len(shared)} subject(s) on both sides, "
                f"e.g. {sorted(shared)[:3]}"
            )
        seen = [data.records[i].recording_id for i in rows if not is_test_side(data.records[i])]
        if seen:
            raise ValueError(f"{data.task.name}/{split.name}: evaluates training-side recordings {seen[:3]}")


def task_data(task: Task, records: list[Recording]) -> TaskData:
    """The task's recordings (its dataset, with audio and a label) and their labels."""
    chosen, labels = [], []
    for rec in records:
        if rec.dataset != task.dataset or rec.audio_path is None or rec.split == "none":
            continue
        label = task.label(rec)
        if label is None:
            continue
        chosen.append(rec)
        labels.append(label)
    if not chosen:
        raise ValueError(f"task {task.name}: no labelled recording of dataset {task.dataset!r} found")
    dtype = np.float64 if task.kind == "regression" else int
    y = np.asarray(labels, dtype=dtype)
    groups = np.asarray([f"{r.dataset}/{r.subject_id}" for r in chosen])
    return TaskData(task, chosen, y, groups)


def get_tasks(names: list[str] | None = None) -> list[Task]:
    if not names:
        return list(TASKS.values())
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise KeyError(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")
    return [TASKS[n] for n in names]
