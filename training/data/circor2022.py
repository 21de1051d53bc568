"""CirCor DigiScope 2022 patient metadata (no audio in the shared copy; ``.wav`` beside it is not read).

Release layout: ``training_data/<patient>.txt``: a header line, one line per recording location, then
``#Key: value`` lines (age group, sex, height, weight, pregnancy, murmur with timing, shape, grading, pitch,
quality, outcome, campaign). One record per patient, ``split='none'``: used to design and test report writing
for rich cardiac metadata, never to train audio models.

Labels: ``murmur`` ('Present'/'Absent'/'Unknown'), ``outcome`` ('Normal'/'Abnormal'), ``age_group``
('Neonate'/'Infant'/'Child'/'Adolescent'/'Young Adult' or None), ``sex``, ``murmur_locations`` (list of 'AV',
'PV', 'TV', 'MV', 'Phc'), ``systolic_grading`` (e.g. 'I/VI' or None).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from acula.training.data.common import AdapterResult, Sex, parse_float, parse_sex, require_dir
from acula.training.data.records import Recording

NAME = "circor2022"
LOCATIONS = {
    "AV": "aortic valve area",
    "PV": "pulmonic valve area",
    "TV": "tricuspid valve area",
    "MV": "mitral valve area",
    "Phc": "another auscultation location",
}


class MurmurDescription(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    timing: str | None
    shape: str | None
    grading: str | None
    pitch: str | None
    quality: str | None


class CirCorMeta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    patient_id: str
    age_group: str | None
    sex: Sex | None
    height_cm: float | None
    weight_kg: float | None
    pregnant: bool | None
    murmur: str
    murmur_locations: tuple[str, ...]
    most_audible_location: str | None
    systolic: MurmurDescription
    diastolic: MurmurDescription
    outcome: str | None
    recording_locations: tuple[str, ...]
    campaign: str | None


def _value(fields: dict[str, str], key: str) -> str | None:
    text = fields.get(key, "").strip()
    return None if text.lower() in ("", "nan", "na") else text


def parse_patient(path: Path) -> CirCorMeta:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    header = lines[0].split()
    count = int(header[1])
    locations = tuple(line.split()[0] for line in lines[1 : 1 + count])
    fields = {}
    for line in lines[1 + count :]:
        if line.startswith("#") and ":" in line:
            key, value = line[1:].split(":", 1)
            fields[key.strip()] = value.strip()

    def murmur(kind: str) -> MurmurDescription:
        return MurmurDescription(
            **{
                part: _value(fields, f"{kind} murmur {part}")
                for part in ("timing", "shape", "grading", "pitch", "quality")
            }
        )

    murmur_locs = _value(fields, "Murmur locations")
    pregnant = _value(fields, "Pregnancy status")
    return CirCorMeta(
        patient_id=header[0],
        age_group=_value(fields, "Age"),
        sex=parse_sex(_value(fields, "Sex")),
        height_cm=parse_float(_value(fields, "Height")),
        weight_kg=parse_float(_value(fields, "Weight")),
        pregnant=None if pregnant is None else pregnant == "True",
        murmur=_value(fields, "Murmur") or "Unknown",
        murmur_locations=tuple(murmur_locs.split("+")) if murmur_locs else (),
        most_audible_location=_value(fields, "Most audible location"),
        systolic=murmur("Systolic"),
        diastolic=murmur("Diastolic"),
        outcome=_value(fields, "Outcome"),
        recording_locations=locations,
        campaign=_value(fields, "Campaign"),
    )


def load(root: Path) -> AdapterResult:
    require_dir(root, NAME, ["training_data/<patient>.txt"])
    result = AdapterResult()
    for path in sorted(root.rglob("*.txt")):
        if path.name.upper().startswith("LICENSE") or not path.stem.isdigit():
            continue
        try:
            meta = parse_patient(path)
        except (ValueError, IndexError) as error:
            result.skip(NAME, str(path), f"unreadable patient file: {error}")
            continue
        result.records.append(
            Recording(
                dataset=NAME,
                recording_id=meta.patient_id,
                subject_id=meta.patient_id,
                audio_path=None,
                native_rate=None,
                duration_s=None,
                split="none",
                metadata=meta,
                labels={
                    "murmur": meta.murmur,
                    "outcome": meta.outcome,
                    "age_group": meta.age_group,
                    "sex": meta.sex,
                    "murmur_locations": list(meta.murmur_locations),
                    "systolic_grading": meta.systolic.grading,
                },
            )
        )
    return result
