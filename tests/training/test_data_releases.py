"""Each adapter on a user's copy of the official release: ``.wav`` audio (the shared copy is FLAC), and the
problems a real copy has (audio missing for a labelled row, a label that cannot be read, an empty or corrupt
file, a stray file): every one is skipped with a reason a user can act on, and the rest is read exactly.

Each copy is built in a temporary folder from the real release files (metadata copied, audio re-encoded to
WAV); nothing is written under the shared data.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import soundfile

from acula.training.data import bmd_hs, coswara, hls_cmds, physionet2016


def _to_wav(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data, rate = soundfile.read(str(src), dtype="int16")
    soundfile.write(str(dst), data, rate, subtype="PCM_16")


def _reasons(result: object) -> Counter[str]:
    return Counter(s.reason.split(":")[0] for s in result.skipped)  # type: ignore[attr-defined]


def test_physionet_release_with_wav_and_problems(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "physionet2016" / "training-a"
    dst = tmp_path / "training-a"
    for record in ("a0001", "a0002", "a0003"):
        _to_wav(src / f"{record}.flac", dst / f"{record}.wav")
    (dst / "a0005.wav").write_bytes(b"")  # listed, but empty
    (dst / "REFERENCE.csv").write_text("a0001,1\na0002,-1\na0003,0\na0004,1\na0005,-1\n")
    (tmp_path / "training-b").mkdir()  # a set without its REFERENCE.csv
    result = physionet2016.load(tmp_path)
    assert [(r.recording_id, r.labels["abnormal"], r.labels["set"]) for r in result.records] == [
        ("a0001", True, "a"),
        ("a0002", False, "a"),
    ]
    assert all(r.audio_path.suffix == ".wav" and r.native_rate == 2000 for r in result.records)  # type: ignore[union-attr]
    assert _reasons(result) == {
        "unreadable label '0' (expected 1 or -1)": 1,  # a0003
        "missing audio (.wav or .flac) listed in REFERENCE.csv": 1,  # a0004
        "empty audio file (0 bytes)": 1,  # a0005
        "no REFERENCE.csv (labels) in this set": 1,  # training-b
    }


def test_bmd_hs_release_with_wav_and_problems(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "bmd_hs"
    for name in ("train.csv", "additional_metadata.csv"):
        shutil.copy(src / name, tmp_path / name)
    patient = sorted((src / "train").glob("AS_005_*.flac"))
    assert len(patient) == 8
    for path in patient:
        _to_wav(path, tmp_path / "train" / f"{path.stem}.wav")
    (tmp_path / "train" / "AS_005_sit_Xyz.wav").write_bytes(b"RIFF")  # unknown site code
    (tmp_path / "train" / "MR_200_sup_Mit.wav").write_bytes(b"not audio at all")  # corrupt
    result = bmd_hs.load(tmp_path)
    assert len(result.records) == 8 and {r.subject_id for r in result.records} == {"patient_005"}
    assert all(r.labels["AS"] is True and r.labels["N"] is False for r in result.records)
    assert {r.site for r in result.records} == {
        "aortic area",
        "mitral area",
        "pulmonic area",
        "tricuspid area",
    }
    assert _reasons(result) == {
        "file name not CLASS_NNN_<sit|sup>_<Aor|Mit|Pul|Tri>": 1,
        "unreadable audio": 1,
    }


def test_hls_cmds_release_with_wav_and_missing_rows(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "hls_cmds"
    shutil.copytree(src / "csv_files", tmp_path / "csv_files")
    # The mixture M0001 with its components, and one heart sound; every other CSV row lacks its audio.
    for rel in ("Mix/M0001", "Mix/H0001", "Mix/L0001", "HS/F_N_RC"):
        _to_wav(src / "Sound" / f"{rel}.flac", tmp_path / "Sound" / f"{rel}.wav")
    result = hls_cmds.load(tmp_path)
    assert sorted(r.recording_id for r in result.records) == ["F_N_RC", "H0001", "L0001", "M0001"]
    assert {r.subject_id for r in result.records if r.recording_id != "F_N_RC"} == {"mix_0001"}
    mixed = next(r for r in result.records if r.recording_id == "M0001")
    assert mixed.labels["heart_sound"] == "Late Systolic Murmur" and mixed.labels["lung_sound"] == "Rhonchi"
    assert _reasons(result) == {"missing audio (.wav or .flac) for a row of csv_files/": 535 - 4}


def test_coswara_release_with_wav_empty_and_silent(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "coswara"
    shutil.copy(src / "combined_data.csv", tmp_path / "combined_data.csv")
    shutil.copytree(src / "annotations", tmp_path / "annotations")
    folder = sorted(p for p in (src / "20200413").iterdir() if p.is_dir())[0]
    dst = tmp_path / "20200413" / folder.name
    dst.mkdir(parents=True)
    shutil.copy(folder / "metadata.json", dst / "metadata.json")
    _to_wav(folder / "cough-heavy.flac", dst / "cough-heavy.wav")
    (dst / "cough-shallow.wav").write_bytes(b"")
    data, rate = soundfile.read(str(folder / "breathing-deep.flac"), dtype="int16")
    soundfile.write(str(dst / "breathing-deep.wav"), data * 0, rate, subtype="PCM_16")
    empty = tmp_path / "20200413" / "noaudio"
    empty.mkdir()
    (empty / "metadata.json").write_text('{"a": "30", "g": "female", "covid_status": "healthy"}')
    result = coswara.load(tmp_path)
    assert [r.recording_id for r in result.records] == [f"{folder.name}_cough-heavy"]
    record = result.records[0]
    assert record.audio_path.suffix == ".wav" and record.native_rate == 16000  # type: ignore[union-attr]
    assert record.labels["covid_status"] is not None and record.subject_id == folder.name
    assert _reasons(result) == {
        "empty audio file (0 bytes)": 1,
        "silent audio (every sample is zero)": 1,
        "missing audio": 1,
    }
