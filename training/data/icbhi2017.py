"""ICBHI 2017 Respiratory Sound Database (full release of 920 recordings, or any subset of it).

Release layout: ``<patient>_<index>_<site>_<sc|mc>_<device>.wav`` with an optional cycle file ``.txt`` beside
it (``start end crackles wheezes`` per respiratory cycle), and three metadata files found anywhere under the
root: ``ICBHI_Challenge_diagnosis.txt`` (patient, diagnosis), ``ICBHI_Challenge_demographic_information.txt``
(patient, age, sex, adult BMI, child weight, child height; NA where unknown) and
``ICBHI_challenge_train_test.txt`` (recording, train|test: the official split).

Labels: ``diagnosis`` (e.g. 'COPD', 'Healthy', 'URTI'), ``crackles`` / ``wheezes`` (bool: any cycle with one;
None without a cycle file), ``age_years``, ``sex``, ``site``, ``device``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from acula.training.data.common import (
    AdapterResult,
    Sex,
    index_audio,
    parse_float,
    parse_sex,
    read_header_or_skip,
    require_dir,
)
from acula.training.data.records import Recording

NAME = "icbhi2017"
SITES = {
    "Tc": "trachea",
    "Al": "left anterior chest",
    "Ar": "right anterior chest",
    "Pl": "left posterior chest",
    "Pr": "right posterior chest",
    "Ll": "left lateral chest",
    "Lr": "right lateral chest",
}
DEVICES = {
    "AKGC417L": "AKG C417L microphone",
    "LittC2SE": "Littmann Classic II SE stethoscope",
    "Litt3200": "Littmann 3200 electronic stethoscope",
    "Meditron": "WelchAllyn Meditron stethoscope",
}


class IcbhiPatient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    patient_id: str
    diagnosis: str
    age_years: float | None
    sex: Sex | None
    adult_bmi: float | None
    child_weight_kg: float | None
    child_height_cm: float | None


class IcbhiCycle(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    start_s: float
    end_s: float
    crackles: bool
    wheezes: bool


class IcbhiMeta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    patient: IcbhiPatient
    site_code: str
    site: str
    mode: Literal["sc", "mc"]
    device: str
    cycles: tuple[IcbhiCycle, ...] | None  # None: the release has no cycle file for this recording


def _find(root: Path, name: str) -> Path:
    matches = sorted(root.rglob(name))
    if not matches:
        raise FileNotFoundError(f"{NAME}: {name} not found under {root}: it is part of the official release")
    return matches[0]


def _table(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _patients(root: Path) -> dict[str, IcbhiPatient]:
    diagnoses = {row[0]: row[1] for row in _table(_find(root, "ICBHI_Challenge_diagnosis.txt"))}
    patients = {}
    for row in _table(_find(root, "ICBHI_Challenge_demographic_information.txt")):
        row = row + ["NA"] * (6 - len(row))
        if row[0] in diagnoses:
            patients[row[0]] = IcbhiPatient(
                patient_id=row[0],
                diagnosis=diagnoses[row[0]],
                age_years=parse_float(row[1]),
                sex=parse_sex(row[2]),
                adult_bmi=parse_float(row[3]),
                child_weight_kg=parse_float(row[4]),
                child_height_cm=parse_float(row[5]),
            )
    return patients


def _cycles(path: Path) -> tuple[IcbhiCycle, ...]:
    return tuple(
        IcbhiCycle(start_s=float(r[0]), end_s=float(r[1]), crackles=r[2] == "1", wheezes=r[3] == "1")
        for r in _table(path)
    )


def load(root: Path) -> AdapterResult:
    require_dir(root, NAME, ["ICBHI_challenge_train_test.txt", "*.wav", "*.txt"])
    result = AdapterResult()
    patients = _patients(root)
    official = {
        row[0]: row[1] for row in _table(_find(root, "ICBHI_challenge_train_test.txt")) if len(row) >= 2
    }
    audio = index_audio(root)
    for stem in sorted(set(official) | set(audio)):
        parts = stem.split("_")
        if len(parts) != 5 or parts[2] not in SITES or parts[3] not in ("sc", "mc"):
            result.skip(NAME, stem, "file name not patient_index_site_mode_device")
            continue
        split = official.get(stem)
        if split not in ("train", "test"):
            result.skip(NAME, stem, "not in ICBHI_challenge_train_test.txt: no official split")
            continue
        patient = patients.get(parts[0])
        if patient is None:
            result.skip(NAME, stem, "patient missing from the diagnosis/demographic files")
            continue
        path = audio.get(stem)
        if path is None:
            result.skip(NAME, stem, "missing audio (.wav or .flac) for a recording of the official split")
            continue
        cycle_file = path.with_suffix(".txt")
        try:
            cycles = _cycles(cycle_file) if cycle_file.is_file() else None
        except (ValueError, IndexError) as error:
            result.skip(NAME, stem, f"unreadable cycle annotation {cycle_file.name}: {error}")
            continue
        header = read_header_or_skip(result, NAME, path)
        if header is None:
            continue
        meta = IcbhiMeta(
            patient=patient,
            site_code=parts[2],
            site=SITES[parts[2]],
            mode=parts[3],
            device=DEVICES.get(parts[4], parts[4]),
            cycles=cycles,
        )
        result.records.append(
            Recording(
                dataset=NAME,
                recording_id=stem,
                subject_id=patient.patient_id,
                audio_path=path,
                native_rate=header[0],
                duration_s=header[1],
                split=split,
                site=meta.site,
                metadata=meta,
                labels={
                    "diagnosis": patient.diagnosis,
                    "crackles": None if cycles is None else any(c.crackles for c in cycles),
                    "wheezes": None if cycles is None else any(c.wheezes for c in cycles),
                    "age_years": patient.age_years,
                    "sex": patient.sex,
                    "site": meta.site,
                    "device": meta.device,
                },
            )
        )
    return result
