"""PhysioNet/CinC Challenge 2016 heart sounds, training sets a..f.

Release layout: ``training-<set>/REFERENCE.csv`` (``record,label`` with 1 abnormal, -1 normal) beside the
recordings ``<record>.wav`` (``.flac`` in the shared copy). There are no patient ids: every record is its own
subject; the source database (set) is kept for leave-one-database-out evaluation.

Labels: ``abnormal`` (bool), ``set`` ('a'..'f').
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from acula.training.data.common import AdapterResult, index_audio, read_header_or_skip, require_dir
from acula.training.data.records import Recording

NAME = "physionet2016"


class PhysioNetMeta(BaseModel):
    """All the 2016 challenge says about a recording: its source database and normal/abnormal."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    set: Literal["a", "b", "c", "d", "e", "f"]
    abnormal: bool


def load(root: Path) -> AdapterResult:
    require_dir(root, NAME, ["training-a/REFERENCE.csv", "..."])
    result = AdapterResult()
    set_dirs = sorted(p for p in root.glob("training-*") if p.is_dir())
    if not set_dirs:
        result.skip(NAME, str(root), "no training-<set> folders found")
    for folder in set_dirs:
        set_name = folder.name.removeprefix("training-")
        reference = folder / "REFERENCE.csv"
        if not reference.is_file():
            result.skip(NAME, str(folder), "no REFERENCE.csv (labels) in this set")
            continue
        audio = index_audio(folder)
        with reference.open(newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
        for row in rows:
            record = row[0].strip()
            value = row[1].strip() if len(row) > 1 else ""
            if value not in ("1", "-1"):
                result.skip(NAME, record, f"unreadable label {value!r} (expected 1 or -1)")
                continue
            path = audio.get(record)
            if path is None:
                result.skip(NAME, record, "missing audio (.wav or .flac) listed in REFERENCE.csv")
                continue
            header = read_header_or_skip(result, NAME, path)
            if header is None:
                continue
            meta = PhysioNetMeta(set=set_name, abnormal=value == "1")
            result.records.append(
                Recording(
                    dataset=NAME,
                    recording_id=record,
                    subject_id=record,
                    audio_path=path,
                    native_rate=header[0],
                    duration_s=header[1],
                    split="train",  # placeholder: training.data.splits assigns the grouped split
                    metadata=meta,
                    labels={"abnormal": meta.abnormal, "set": set_name},
                )
            )
    return result
