"""BMD-HS (BUET Multi-disease Heart Sound dataset).

Release layout: ``train/<CLASS>_<NNN>_<sit|sup>_<Aor|Mit|Pul|Tri>.wav`` (8 recordings per patient),
``train.csv`` (multi-label AS, AR, MR, MS, N per patient and the patient's 8 file names) and
``additional_metadata.csv`` (Age, Gender, Smoker, Lives U/R). Files whose patient is not in ``train.csv``
are kept with unknown labels (the public release has 8 such recordings, patient 022).

Labels: ``AS``, ``AR``, ``MR``, ``MS``, ``N`` (bool, or None when unlabelled), ``age_years`` (float or None),
``sex`` ('male'/'female' or None), ``smoker`` (bool or None), ``position`` ('sitting'/'supine'), ``site``.
"""

from __future__ import annotations

import csv
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

NAME = "bmd_hs"
VALVES = ("AS", "AR", "MR", "MS")
DISEASE_NAMES = {
    "AS": "aortic stenosis",
    "AR": "aortic regurgitation",
    "MR": "mitral regurgitation",
    "MS": "mitral stenosis",
}
SITES = {"Aor": "aortic area", "Mit": "mitral area", "Pul": "pulmonic area", "Tri": "tricuspid area"}
POSITIONS = {"sit": "sitting", "sup": "supine"}


class BmdPatient(BaseModel):
    """One patient's rows of train.csv and additional_metadata.csv (None where the release has none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    patient_id: str
    AS: bool | None = None
    AR: bool | None = None
    MR: bool | None = None
    MS: bool | None = None
    N: bool | None = None
    age_years: float | None = None
    sex: Sex | None = None
    smoker: bool | None = None
    residence: Literal["urban", "rural"] | None = None


class BmdMeta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    patient: BmdPatient
    file_class: str
    position: Literal["sitting", "supine"]
    site: str


def _flag(value: str | None) -> bool | None:
    text = (value or "").strip()
    return True if text == "1" else False if text == "0" else None


def _patients(root: Path, result: AdapterResult) -> dict[str, BmdPatient]:
    """Patients by their three-digit number, from train.csv joined with additional_metadata.csv."""
    extra: dict[str, dict[str, str]] = {}
    extra_path = root / "additional_metadata.csv"
    if extra_path.is_file():
        with extra_path.open(newline="") as handle:
            extra = {row["patient_id"].strip(): row for row in csv.DictReader(handle)}
    patients: dict[str, BmdPatient] = {}
    with (root / "train.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            pid = row["patient_id"].strip()
            flags = {key: _flag(row.get(key)) for key in (*VALVES, "N")}
            if any(value is None for value in flags.values()):
                result.skip(NAME, pid, f"unreadable label in train.csv: {flags}")
                continue
            more = extra.get(pid, {})
            lives = (more.get("Lives") or "").strip().upper()
            patients[pid.rsplit("_", 1)[-1]] = BmdPatient(
                patient_id=pid,
                **flags,
                age_years=parse_float(more.get("Age")),
                sex=parse_sex(more.get("Gender")),
                smoker=_flag(more.get("Smoker")),
                residence="urban" if lives == "U" else "rural" if lives in ("R", "F") else None,
            )
    return patients


def load(root: Path) -> AdapterResult:
    require_dir(root, NAME, ["train/", "train.csv", "additional_metadata.csv"])
    result = AdapterResult()
    if not (root / "train.csv").is_file():
        raise FileNotFoundError(f"{NAME}: {root / 'train.csv'} not found: it holds the labels")
    patients = _patients(root, result)
    for stem, path in sorted(index_audio(root).items()):
        parts = stem.split("_")
        if len(parts) != 4 or parts[2] not in POSITIONS or parts[3] not in SITES:
            result.skip(NAME, stem, "file name not CLASS_NNN_<sit|sup>_<Aor|Mit|Pul|Tri>")
            continue
        number = parts[1]
        patient = patients.get(number) or BmdPatient(patient_id=f"patient_{number}")
        header = read_header_or_skip(result, NAME, path)
        if header is None:
            continue
        meta = BmdMeta(
            patient=patient,
            file_class=parts[0],
            position=POSITIONS[parts[2]],
            site=SITES[parts[3]],
        )
        result.records.append(
            Recording(
                dataset=NAME,
                recording_id=stem,
                subject_id=patient.patient_id,
                audio_path=path,
                native_rate=header[0],
                duration_s=header[1],
                split="train",  # placeholder: training.data.splits assigns the grouped split
                site=meta.site,
                metadata=meta,
                labels={
                    **{key: getattr(patient, key) for key in (*VALVES, "N")},
                    "age_years": patient.age_years,
                    "sex": patient.sex,
                    "smoker": patient.smoker,
                    "position": meta.position,
                    "site": meta.site,
                },
            )
        )
    return result
