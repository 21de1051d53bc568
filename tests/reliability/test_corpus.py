"""Replay the regression corpus (``corpus/cases.json``): each input gets the same answer as when it was
found, from ``decode_audio`` and from a live server (the HTTP status ``ERROR_MAP`` gives that code, or 200).

The corpus holds generator specs, not binaries: a one-hour FLAC bomb is 89 KB, its spec 100 bytes, and the
specs say what each input is. Cases are built from the real-recording seeds (``mutations.seed_files``).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from acula.service.api.errors import ERROR_MAP
from acula.service.audio import AudioError, AudioLimits, decode_audio
from tests.reliability import mutations
from tests.support import audio_cases
from tests.support.server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CASES = json.loads((Path(__file__).parent / "corpus" / "cases.json").read_text())["cases"]
# What the service passes to the decoder with its default settings (600 s; the tiny bundle's 0.5 s minimum).
LIMITS = AudioLimits(max_seconds=600.0, min_seconds=0.5, max_bytes=50 * 1024 * 1024)


def build(case: dict, seeds: dict[str, bytes]) -> bytes:
    if case.get("make") == "silence_flac":
        return mutations.silence_flac(case["seconds"], total=case.get("total"))
    if case.get("make") == "nan_wav":
        return mutations.nan_wav()
    if case.get("make") == "scaled_float":
        return audio_cases.scaled_float(case["container"], case["peak"])
    if case.get("make") == "rate_bomb":
        return mutations.rate_bomb(case["declared"])
    if case.get("make") == "referencing":
        return (
            audio_cases.REFERENCING_FILES[case["kind"]]
            .format(name="models/acula-default/reports.jsonl")
            .encode()
        )
    if case.get("make") == "mp3_joined":
        return audio_cases.mp3_joined(*(tuple(part) for part in case["parts"]))
    data = seeds[case["seed"]]
    if "wav_field" in case:
        data = mutations.wav_field(data, *case["wav_field"])
    if "flac" in case:
        data = mutations.flac_streaminfo(data, **case["flac"])
    if "keep" in case:
        data = data[: case["keep"]]
    return data


def test_the_corpus_is_small_and_well_formed() -> None:
    folder = Path(__file__).parent / "corpus"
    assert sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) < 100_000
    assert len({case["id"] for case in CASES}) == len(CASES)
    assert all(case["expect"] == "ok" or case["expect"] in ERROR_MAP for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_corpus_case_decodes_as_recorded(case: dict, seeds: dict[str, bytes], live: LiveServer) -> None:
    data = build(case, seeds)
    try:
        decode_audio(data, 8000, LIMITS)
        code = "ok"
    except AudioError as exc:
        code = exc.code
    assert code == case["expect"]

    response = httpx.post(
        f"{live.url}/predict", files={"file": ("x", data, "application/octet-stream")}, timeout=60
    )
    assert response.status_code == (200 if code == "ok" else ERROR_MAP[code][0]), response.text
    if code != "ok":
        assert response.json()["code"] == code
