"""HLS-CMDS: heart, lung and mixed sounds played by a clinical manikin (not patients).

Layout: ``Sound/HS/*.wav`` (heart), ``Sound/LS/*.wav`` (lung), ``Sound/Mix/{H,L,M}NNNN.wav`` (each mixed
sound M with its heart component H and lung component L) and ``csv_files/{HS,LS,Mix}.csv`` with sound type(s),
chest landmark and manikin sex. A manikin has no subject: each recording is its own group, except that a
mixture and its two components share one group (``mix_NNNN``) so no split separates them.

Labels: ``heart_sound`` (e.g. 'Normal', 'S3', 'Atrial Fibrillation'; None for lung-only recordings),
``lung_sound`` (e.g. 'Wheezing', 'Fine Crackles'; None for heart-only), ``component`` ('heart', 'lung',
'mixed'), ``sex`` (manikin voice/body setting 'male'/'female'), ``site``.
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
    parse_sex,
    read_header_or_skip,
    require_dir,
)
from acula.training.data.records import Recording

NAME = "hls_cmds"
LANDMARKS = {
    "Apex": "cardiac apex",
    "LUSB": "left upper sternal border",
    "LLSB": "left lower sternal border",
    "RUSB": "right upper sternal border",
    "LC": "left chest landmark LC",  # the release names the landmark only by this code
    "RC": "right chest landmark RC",
    "RUA": "right upper anterior chest",
    "RMA": "right middle anterior chest",
    "RLA": "right lower anterior chest",
    "LUA": "left upper anterior chest",
    "LMA": "left middle anterior chest",
    "LLA": "left lower anterior chest",
}


# The lung CSV names crackle files ``<sex>_C_<site>`` (fine) and ``<sex>_G_<site>`` (coarse) while the audio
# files are ``<sex>_FC_<site>`` and ``<sex>_CC_<site>``: the file name is also tried with this type code.
LUNG_CODES = {
    "Fine Crackles": "FC",
    "Coarse Crackles": "CC",
    "Normal": "N",
    "Pleural Rub": "PR",
    "Rhonchi": "R",
    "Wheezing": "W",
}


class HlsMeta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    component: Literal["heart", "lung", "mixed"]
    heart_sound: str | None
    lung_sound: str | None
    landmark: str
    site: str
    manikin_sex: Sex | None


def _rows(root: Path, name: str) -> list[dict[str, str]]:
    path = root / "csv_files" / f"{name}.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(handle)]


def _entries(root: Path) -> list[tuple[str, str, HlsMeta]]:
    """(recording id, group id, metadata) for every row of the three CSV files."""
    entries: list[tuple[str, str, HlsMeta]] = []

    def meta(component: str, heart: str | None, lung: str | None, row: dict[str, str]) -> HlsMeta:
        landmark = row["Location"]
        return HlsMeta(
            component=component,
            heart_sound=heart,
            lung_sound=lung,
            landmark=landmark,
            site=LANDMARKS.get(landmark, landmark),
            manikin_sex=parse_sex(row.get("Gender")),
        )

    for row in _rows(root, "HS"):
        rid = row["Heart Sound ID"]
        entries.append((rid, rid, meta("heart", row["Heart Sound Type"], None, row)))
    for row in _rows(root, "LS"):
        rid = row["Lung Sound ID"]
        entries.append((rid, rid, meta("lung", None, row["Lung Sound Type"], row)))
    for row in _rows(root, "Mix"):
        group = "mix_" + row["Mixed Sound ID"].lstrip("M")
        heart, lung = row["Heart Sound Type"], row["Lung Sound Type"]
        entries.append((row["Heart Sound ID"], group, meta("heart", heart, None, row)))
        entries.append((row["Lung Sound ID"], group, meta("lung", None, lung, row)))
        entries.append((row["Mixed Sound ID"], group, meta("mixed", heart, lung, row)))
    return entries


def load(root: Path) -> AdapterResult:
    require_dir(root, NAME, ["Sound/HS/", "Sound/LS/", "Sound/Mix/", "csv_files/"])
    result = AdapterResult()
    entries = _entries(root)
    if not entries:
        result.skip(NAME, str(root / "csv_files"), "no HS.csv, LS.csv or Mix.csv: no labels to read")
    audio = index_audio(root / "Sound") if (root / "Sound").is_dir() else {}
    for rid, group, meta in entries:
        path = audio.get(rid)
        code = LUNG_CODES.get(meta.lung_sound or "")
        if path is None and meta.component == "lung" and rid.count("_") == 2 and code:
            sex, _, landmark = rid.split("_")
            rid = f"{sex}_{code}_{landmark}"
            path = audio.get(rid)
        if path is None:
            result.skip(NAME, rid, "missing audio (.wav or .flac) for a row of csv_files/")
            continue
        header = read_header_or_skip(result, NAME, path)
        if header is None:
            continue
        result.records.append(
            Recording(
                dataset=NAME,
                recording_id=rid,
                subject_id=group,
                audio_path=path,
                native_rate=header[0],
                duration_s=header[1],
                split="train",  # placeholder: training.data.splits assigns the grouped split
                site=meta.site,
                metadata=meta,
                labels={
                    "heart_sound": meta.heart_sound,
                    "lung_sound": meta.lung_sound,
                    "component": meta.component,
                    "sex": meta.manikin_sex,
                    "site": meta.site,
                },
            )
        )
    return result
