"""The adapters on the real data: exact counts per dataset, split and label (the data README's numbers),
and a user's official-release layout (.wav, later test sets, broken files) built in a temporary folder."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import soundfile

from acula.training.data import DATASETS, load_datasets, load_records
from acula.training.data.common import AdapterResult

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(shared_data: Path) -> dict[str, AdapterResult]:
    return load_datasets(shared_data)


def _count(result: AdapterResult, key: str) -> Counter[str]:
    return Counter(str(r.labels.get(key)) for r in result.records)


def test_every_dataset_is_read(results: dict[str, AdapterResult]) -> None:
    assert set(results) == set(DATASETS)


def test_sprsound_official_splits_and_labels(results: dict[str, AdapterResult]) -> None:
    spr = results["sprsound"]
    assert len(spr.records) == 2683 and not spr.skipped
    assert Counter(r.split for r in spr.records) == {"train": 1949, "test-intra": 379, "test-inter": 355}
    assert len({r.subject_id for r in spr.records}) == 292
    by_split = Counter((r.split, r.labels["record_label"]) for r in spr.records)
    assert by_split[("train", "Normal")] == 1303 and by_split[("train", "Poor Quality")] == 177
    assert by_split[("test-inter", "CAS")] == 65 and by_split[("test-intra", "DAS")] == 75
    assert {r.native_rate for r in spr.records} == {8000}
    record = next(r for r in spr.records if r.recording_id == "40069321_15.3_0_p1_981")
    assert record.labels["age_years"] == 15.3 and record.labels["sex"] == "male"
    assert record.site == "left posterior chest"


def test_physionet_sets_and_labels(results: dict[str, AdapterResult]) -> None:
    pn = results["physionet2016"]
    assert len(pn.records) == 3240 and not pn.skipped
    assert _count(pn, "abnormal") == {"True": 665, "False": 2575}
    assert _count(pn, "set") == {"a": 409, "b": 490, "c": 31, "d": 55, "e": 2141, "f": 114}
    assert all(r.subject_id == r.recording_id for r in pn.records)  # no patient ids: record = subject
    assert max(r.duration_s or 0 for r in pn.records) <= 10.01 and {r.native_rate for r in pn.records} == {
        2000
    }


def test_bmd_hs_labels_and_unlabelled_patient(results: dict[str, AdapterResult]) -> None:
    bmd = results["bmd_hs"]
    assert len(bmd.records) == 872 and len({r.subject_id for r in bmd.records}) == 109
    unlabelled = [r for r in bmd.records if r.labels["N"] is None]
    assert len(unlabelled) == 8 and {r.subject_id for r in unlabelled} == {"patient_022"}
    assert _count(bmd, "AS")["True"] == 296 and _count(bmd, "AR")["True"] == 344
    assert (
        _count(bmd, "MR")["True"] == 304
        and _count(bmd, "MS")["True"] == 304
        and _count(bmd, "N")["True"] == 168
    )
    first = next(r for r in bmd.records if r.recording_id == "MD_001_sup_Mit")
    assert (
        first.labels["age_years"] == 35 and first.labels["sex"] == "male" and first.labels["smoker"] is True
    )
    assert first.site == "mitral area" and first.labels["position"] == "supine"


def test_coswara_counts_empty_and_silent_files(results: dict[str, AdapterResult]) -> None:
    cos = results["coswara"]
    # 76 participants x 4 sounds = 304 files: 8 are empty (0 bytes) and 22 hold only zeros (failed
    # captures); both are skipped with their reason, never silently dropped.
    assert len(cos.records) + len(cos.skipped) == 304
    reasons = Counter(s.reason for s in cos.skipped)
    assert reasons == {"empty audio file (0 bytes)": 8, "silent audio (every sample is zero)": 22}
    assert len(cos.records) == 274 and len({r.subject_id for r in cos.records}) == 71
    assert Counter(r.labels["sound_type"] for r in cos.records) == {
        "breathing-deep": 67,
        "breathing-shallow": 71,
        "cough-heavy": 68,
        "cough-shallow": 68,
    }
    assert _count(cos, "covid_status") == {
        "healthy": 238,
        "no_resp_illness_exposed": 20,
        "resp_illness_not_identified": 16,
    }
    for record in cos.records:  # no kept record is silent
        data, _ = soundfile.read(str(record.audio_path))
        assert abs(data).max() > 0, record.recording_id


def test_hls_cmds_components(results: dict[str, AdapterResult]) -> None:
    hls = results["hls_cmds"]
    assert len(hls.records) == 535 and not hls.skipped
    assert _count(hls, "component") == {"heart": 195, "lung": 195, "mixed": 145}
    mix = [r for r in hls.records if r.subject_id == "mix_0001"]
    assert sorted(r.recording_id for r in mix) == ["H0001", "L0001", "M0001"]


def test_icbhi_sample_and_missing_audio(results: dict[str, AdapterResult]) -> None:
    icbhi = results["icbhi2017"]
    assert len(icbhi.records) == 31
    assert sum(r.labels["crackles"] is not None for r in icbhi.records) == 13  # cycle files present
    # The official split file lists 921 names; every one without audio in the sample is reported as skipped.
    assert len(icbhi.skipped) == 921 - 31
    assert {s.reason.split(" (")[0] for s in icbhi.skipped} == {"missing audio"}
    assert Counter(r.split for r in icbhi.records) == {"test": 30, "train": 1}
    assert {r.native_rate for r in icbhi.records} == {4000, 16000}


def test_circor_metadata_only(results: dict[str, AdapterResult]) -> None:
    circor = results["circor2022"]
    assert len(circor.records) == 942
    assert all(r.audio_path is None and r.split == "none" for r in circor.records)
    assert _count(circor, "murmur") == {"Present": 179, "Absent": 695, "Unknown": 68}


def _flac_to_wav(src: Path, dst: Path) -> None:
    data, rate = soundfile.read(str(src))
    soundfile.write(str(dst), data, rate)


def test_icbhi_full_release_layout_with_wav_and_broken_files(shared_data: Path, tmp_path: Path) -> None:
    """A user's official release: .wav audio, metadata beside it, one corrupt file, one unlisted file."""
    src = shared_data / "icbhi2017_sample"
    release = tmp_path / "ICBHI_final_database"
    release.mkdir()
    for name in (
        "ICBHI_Challenge_diagnosis.txt",
        "ICBHI_Challenge_demographic_information.txt",
        "ICBHI_challenge_train_test.txt",
    ):
        shutil.copy(src / name, release / name)
    _flac_to_wav(src / "audio_and_txt/101_1b1_Al_sc_Meditron.flac", release / "101_1b1_Al_sc_Meditron.wav")
    shutil.copy(src / "audio_and_txt/101_1b1_Al_sc_Meditron.txt", release)
    (release / "102_1b1_Ar_sc_Meditron.wav").write_bytes(b"RIFF not really a wave file")
    _flac_to_wav(src / "audio_and_txt/101_1b1_Pr_sc_Meditron.flac", release / "999_1b1_Ar_sc_Meditron.wav")
    result = load_datasets(tmp_path, ["icbhi2017"])["icbhi2017"]
    assert [r.recording_id for r in result.records] == ["101_1b1_Al_sc_Meditron"]
    assert result.records[0].audio_path is not None and result.records[0].audio_path.suffix == ".wav"
    assert result.records[0].labels["crackles"] is not None
    reasons = {s.item.split("/")[-1]: s.reason for s in result.skipped}
    assert reasons["102_1b1_Ar_sc_Meditron.wav"].startswith("unreadable audio")
    assert reasons["999_1b1_Ar_sc_Meditron"].startswith("not in ICBHI_challenge_train_test.txt")
    assert reasons["101_1b1_Pr_sc_Meditron"].startswith("missing audio")


def test_sprsound_later_test_set_and_unreadable_label(shared_data: Path, tmp_path: Path) -> None:
    """A later SPRSound release adds test sets in new folders (split 'test'); a broken JSON is reported."""
    src = shared_data / "sprsound"
    root = tmp_path / "sprsound"
    for folder in ("train_json", "train_wav", "test2023_json", "test2023_wav"):
        (root / folder).mkdir(parents=True)
    stems = ["40069321_15.3_0_p1_981", "40069321_15.3_0_p2_982"]
    for stem in stems:
        shutil.copy(src / "train_json" / f"{stem}.json", root / "train_json")
        _flac_to_wav(src / "train_wav" / f"{stem}.flac", root / "train_wav" / f"{stem}.wav")
    later = "70000001_3.5_1_p4_1"
    (root / "test2023_json" / f"{later}.json").write_text(
        json.dumps(
            {
                "record_annotation": "CAS",
                "event_annotation": [{"start": "10", "end": "900", "type": "Wheeze"}],
            }
        )
    )
    _flac_to_wav(src / "train_wav" / f"{stems[0]}.flac", root / "test2023_wav" / f"{later}.wav")
    (root / "test2023_json" / "70000002_2.0_0_p1_2.json").write_text('{"record_annotation": "Unknown"}')
    (root / "test2023_wav" / "70000002_2.0_0_p1_2.wav").write_bytes(b"")
    result = load_datasets(tmp_path, ["sprsound"])["sprsound"]
    splits = {r.recording_id: r.split for r in result.records}
    assert splits == {stems[0]: "train", stems[1]: "train", later: "test"}
    new = next(r for r in result.records if r.recording_id == later)
    assert new.labels["events"] == ["Wheeze"] and new.labels["sex"] == "female" and new.fold in range(5)
    assert [s.reason.split(":")[0] for s in result.skipped] == ["unreadable label"]


def test_load_records_names_unknown_datasets(shared_data: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_records(shared_data, ["icbhi"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_records(shared_data / "nowhere")
