"""``acula audio inspect``: the installed entry point, run as a user runs it, on real and broken files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from tests.support.audio_cases import encode, random_bytes, sine

ACULA = Path(sys.executable).parent / "acula"
REAL_FILE = "sprsound/train_wav/65039232_6.4_1_p1_373.flac"  # 0.304 s at 8 kHz: small and real


def _acula(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not ACULA.is_file():
        pytest.skip(f"{ACULA} is not installed: run the README's setup command")
    return subprocess.run([str(ACULA), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_inspect_reports_header_and_decode_of_a_real_file(shared_data: Path) -> None:
    path = shared_data / REAL_FILE
    info = sf.info(str(path))

    result = _acula("audio", "inspect", "--json", path)

    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)
    assert report["ok"] and report["error"] is None
    header, decoded = report["header"], report["decoded"]
    assert (header["format"], header["subtype"], header["channels"]) == ("FLAC", "PCM_16", 1)
    assert header["native_rate"] == info.samplerate
    assert header["duration_s"] == pytest.approx(info.duration)
    assert decoded["rate"] == 16000
    assert decoded["samples"] == pytest.approx(info.frames * 16000 / info.samplerate, abs=1)
    assert decoded["duration_s"] == pytest.approx(info.duration)
    assert 0 < decoded["rms"] < decoded["peak"] <= 1


def test_inspect_names_each_failure_and_exits_1(shared_data: Path, tmp_path: Path) -> None:
    noise = tmp_path / "noise.wav"
    noise.write_bytes(random_bytes(2048))
    half = tmp_path / "half.wav"
    half.write_bytes(encode(sine(seconds=2.0), 16000)[:32000])
    silent = tmp_path / "silent.flac"
    silent.write_bytes(encode(sine(seconds=1.0) * 0, 16000, "FLAC"))
    files = [shared_data / REAL_FILE, noise, half, silent, tmp_path / "absent.wav"]

    result = _acula("audio", "inspect", "--json", *files)

    assert result.returncode == 1
    reports = {Path(report["file"]).name: report for report in json.loads(result.stdout)}
    assert reports[Path(REAL_FILE).name]["ok"]
    codes = {name: report["error"]["code"] for name, report in reports.items() if not report["ok"]}
    assert codes == {
        "noise.wav": "not_audio",
        "half.wav": "truncated",
        "silent.flac": "digital_silence",
        "absent.wav": "not_found",
    }
    assert reports["silent.flac"]["header"]["duration_s"] == pytest.approx(1.0)  # the header was readable


def test_inspect_text_output(shared_data: Path, tmp_path: Path) -> None:
    noise = tmp_path / "noise.bin"
    noise.write_bytes(random_bytes(512))

    result = _acula("audio", "inspect", shared_data / REAL_FILE, noise, "--rate", "8000")

    assert result.returncode == 1
    assert "header : FLAC PCM_16, 1 channel(s), 8000 Hz, 0.304 s" in result.stdout
    assert "decoded: 2432 samples at 8000 Hz, 0.304 s" in result.stdout
    assert "error  : not_audio: " in result.stdout
