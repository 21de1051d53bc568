"""Coswara (IISc) cough and breathing sounds, one or more collection dates.

Release layout: ``<YYYYMMDD>/<participant>/<sound>.wav`` with a ``metadata.json`` per participant (short keys,
legend in ``csv_labels_legend.json``), ``combined_data.csv`` (one row per participant, the richer source, used
first) and ``annotations/<sound>_labels.csv`` (annotator quality 0 bad, 1 good, 2 excellent).

Labels: ``sex`` ('male'/'female'/None), ``age_years`` (float), ``covid_status`` (e.g. 'healthy',
'resp_illness_not_identified', 'no_resp_illness_exposed', 'positive_mild'), ``sound_type`` (e.g.
'cough-heavy', 'breathing-deep'), ``quality`` (0/1/2 as float, None when not annotated), ``smoker``,
``asthma``, ``hypertension``, ``diabetes``, ``fever`` (bool: True when the participant said so, else False).

Skipped, with the reason shown by ``acula data summary``: empty files (0 bytes) and silent files (every
sample zero; the only check here that reads the audio rather than its header).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from acula.training.data.common import (
    AdapterResult,
    Sex,
    is_silent,
    parse_float,
    parse_sex,
    read_header_or_skip,
    require_dir,
)
from acula.training.data.records import Recording

NAME = "coswara"
# The 2020-04-13 collection holds 22 files whose every sample is zero (failed captures) besides 8 empty
# ones: both are skipped with a reason, so records + skipped equals the release's 304 files, and no model
# is trained or benchmarked on silence labelled with a participant's health.
SILENT = "silent audio (every sample is zero)"
CONDITIONS = {  # combined_data.csv column -> our name; True when the participant reported it
    "smoker": "smoker",
    "asthma": "asthma",
    "ht": "hypertension",
    "diabetes": "diabetes",
    "fever": "fever",
    "cough": "cough",
    "cold": "cold",
    "bd": "breathing_difficulty",
    "st": "sore_throat",
    "cld": "chronic_lung_disease",
    "pneumonia": "pneumonia",
    "ihd": "ischaemic_heart_disease",
}


class CoswaraParticipant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    participant_id: str
    age_years: float | None
    sex: Sex | None
    covid_status: str | None
    record_date: str | None
    conditions: tuple[str, ...]  # names from CONDITIONS the participant reported


class CoswaraMeta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    participant: CoswaraParticipant
    sound_type: str
    quality: int | None


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("true", "y", "yes", "1")


def _participant(pid: str, row: dict[str, str]) -> CoswaraParticipant:
    return CoswaraParticipant(
        participant_id=pid,
        age_years=parse_float(str(row.get("a", ""))),
        sex=parse_sex(str(row.get("g", ""))),
        covid_status=(str(row.get("covid_status") or "").strip() or None),
        record_date=(str(row.get("record_date") or "").strip() or None),
        conditions=tuple(name for key, name in CONDITIONS.items() if _truthy(row.get(key, ""))),
    )


def _quality(root: Path) -> dict[str, int]:
    """Annotator quality per '<participant>_<sound>' from every annotations/*_labels.csv."""
    quality: dict[str, int] = {}
    for path in sorted((root / "annotations").glob("*_labels.csv")):
        with path.open(newline="") as handle:
            for row in csv.reader(handle):
                if len(row) >= 2 and row[1].strip().isdigit():
                    quality[row[0].strip()] = int(row[1].strip())
    return quality


def load(root: Path) -> AdapterResult:
    require_dir(root, NAME, ["<date>/<participant>/metadata.json", "combined_data.csv"])
    result = AdapterResult()
    combined: dict[str, dict[str, str]] = {}
    if (root / "combined_data.csv").is_file():
        with (root / "combined_data.csv").open(newline="") as handle:
            combined = {row["id"].strip(): row for row in csv.DictReader(handle)}
    quality = _quality(root)
    for meta_path in sorted(root.glob("*/*/metadata.json")):
        folder = meta_path.parent
        pid = folder.name
        try:
            row = combined.get(pid) or json.loads(meta_path.read_text())
            participant = _participant(pid, row)
        except Exception as error:
            result.skip(NAME, str(meta_path), f"unreadable metadata: {error}")
            continue
        sounds = sorted(p for p in folder.iterdir() if p.suffix in (".wav", ".flac"))
        if not sounds:
            result.skip(NAME, pid, "missing audio: participant folder holds no .wav or .flac")
        by_stem = {p.stem: p for p in sounds if p.suffix == ".wav"} | {
            p.stem: p for p in sounds if p.suffix == ".flac"
        }
        for sound, path in sorted(by_stem.items()):
            header = read_header_or_skip(result, NAME, path)
            if header is None:
                continue
            if is_silent(path):
                result.skip(NAME, str(path), SILENT)
                continue
            meta = CoswaraMeta(
                participant=participant, sound_type=sound, quality=quality.get(f"{pid}_{sound}")
            )
            labels: dict[str, str | float | bool | list[str] | None] = {
                "sex": participant.sex,
                "age_years": participant.age_years,
                "covid_status": participant.covid_status,
                "sound_type": sound,
                "quality": None if meta.quality is None else float(meta.quality),
            }
            labels |= {name: name in participant.conditions for name in CONDITIONS.values()}
            result.records.append(
                Recording(
                    dataset=NAME,
                    recording_id=f"{pid}_{sound}",
                    subject_id=pid,
                    audio_path=path.resolve(),
                    native_rate=header[0],
                    duration_s=header[1],
                    split="train",  # placeholder: training.data.splits assigns the grouped split
                    metadata=meta,
                    labels=labels,
                )
            )
    return result
