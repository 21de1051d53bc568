"""SPRSound (SJTU paediatric respiratory sounds, BioCAS 2022 and later releases).

Release layout: one annotation JSON per recording (``record_annotation`` or, in the README's spelling,
``recording_annotation``; ``event_annotation`` list of timed events) beside a ``*_wav`` folder. The file stem
``<patient>_<age>_<sex 0=male 1=female>_<p1..p4>_<number>`` carries the demographics. The official split comes
from the folder the JSON is in: ``train*`` -> train, ``*intra*`` -> test-intra, ``*inter*`` -> test-inter,
any other ``test*`` folder (later challenge years) -> test.

Labels: ``record_label`` (Normal / CAS / DAS / CAS & DAS / Poor Quality), ``events`` (distinct event types,
e.g. ['Wheeze', 'Fine Crackle']; 'Normal' left out), ``age_years`` (float), ``sex`` ('male'/'female'),
``site`` (e.g. 'left posterior chest').
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from acula.training.data.common import (
    AdapterResult,
    Sex,
    index_audio,
    parse_sex,
    read_header_or_skip,
    require_dir,
)
from acula.training.data.records import Recording, Split

NAME = "sprsound"
RecordLabel = Literal["Normal", "CAS", "DAS", "CAS & DAS", "Poor Quality"]
EventType = Literal[
    "Normal", "Rhonchi", "Wheeze", "Stridor", "Coarse Crackle", "Fine Crackle", "Wheeze+Crackle"
]
POSITIONS = {
    "p1": "left posterior chest",
    "p2": "left lateral chest",
    "p3": "right posterior chest",
    "p4": "right lateral chest",
}


class SprEvent(BaseModel):
    model_config = ConfigDict(frozen=True)
    start_ms: float
    end_ms: float
    type: EventType


class SprSoundMeta(BaseModel):
    """Everything SPRSound says about one recording."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    patient: str
    age_years: float
    sex: Sex
    position: Literal["p1", "p2", "p3", "p4"]
    site: str
    record_label: RecordLabel
    events: tuple[SprEvent, ...]
    device: str = "Yunting model II stethoscope"


def split_from_path(relative: Path) -> Split | None:
    """The official split from the annotation's folder names below the root (see the module docstring)."""
    parts = [p.lower() for p in relative.parent.parts]
    for part in reversed(parts):
        if "intra" in part:
            return "test-intra"
        if "inter" in part:
            return "test-inter"
        if "train" in part:
            return "train"
        if "test" in part:
            return "test"
    return None


def parse_stem(stem: str) -> tuple[str, float, Sex, str] | None:
    """(patient, age, sex, position) from ``<patient>_<age>_<sex>_<pN>_<number>``, or None if malformed."""
    parts = stem.split("_")
    if len(parts) != 5 or parts[3] not in POSITIONS:
        return None
    sex = parse_sex(parts[2])
    try:
        age = float(parts[1])
    except ValueError:
        return None
    return (parts[0], age, sex, parts[3]) if sex is not None else None


def load(root: Path) -> AdapterResult:
    """Every annotated recording under ``root`` with its official split."""
    require_dir(root, NAME, ["train_json/", "train_wav/", "test_json/", "test_wav/"])
    result = AdapterResult()
    audio = index_audio(root)
    for json_path in sorted(root.rglob("*.json")):
        stem = json_path.stem
        split = split_from_path(json_path.relative_to(root))
        parsed = parse_stem(stem)
        if split is None or parsed is None:
            reason = (
                "no train/test folder in its path" if split is None else "file name not patient_age_sex_pN_n"
            )
            result.skip(NAME, str(json_path), reason)
            continue
        path = audio.get(stem)
        if path is None:
            result.skip(NAME, stem, "missing audio (.wav or .flac with the annotation's name)")
            continue
        try:
            raw = json.loads(json_path.read_text())
            label = raw.get("record_annotation", raw.get("recording_annotation"))
            events = tuple(
                SprEvent(start_ms=float(e["start"]), end_ms=float(e["end"]), type=e["type"])
                for e in raw.get("event_annotation", [])
            )
            patient, age, sex, position = parsed
            meta = SprSoundMeta(
                patient=patient,
                age_years=age,
                sex=sex,
                position=position,
                site=POSITIONS[position],
                record_label=label,
                events=events,
            )
        except Exception as error:
            result.skip(NAME, stem, f"unreadable label: {error}")
            continue
        header = read_header_or_skip(result, NAME, path)
        if header is None:
            continue
        kinds: list[str] = sorted({e.type for e in events if e.type != "Normal"})
        result.records.append(
            Recording(
                dataset=NAME,
                recording_id=stem,
                subject_id=patient,
                audio_path=path,
                native_rate=header[0],
                duration_s=header[1],
                split=split,
                site=meta.site,
                metadata=meta,
                labels={
                    "record_label": meta.record_label,
                    "events": kinds,
                    "age_years": age,
                    "sex": sex,
                    "site": meta.site,
                },
            )
        )
    return result
