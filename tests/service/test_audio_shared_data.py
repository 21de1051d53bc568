"""Every audio file in the real shared data decodes with the rate and length soundfile reports for it.

Coswara holds empty (0-byte) recordings and recordings that are digital silence, as its release does: the
empty ones must be refused as empty, the silent ones refused as silence (confirmed with soundfile) by
default and decoded like the rest when silence is allowed.
Decoding is at the native rate, so the test measures decoding and validation, not resampling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acula.service.audio import AudioError, AudioLimits, DigitalSilenceError, EmptyInputError, decode_audio

pytestmark = pytest.mark.slow
AUDIO_SUFFIXES = {".flac", ".wav", ".mp3", ".ogg"}


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _outcome(path: Path) -> str | None:
    """Decode ``path`` at its native rate and compare with soundfile; a description of any mismatch."""
    if path.stat().st_size == 0:
        try:
            decode_audio(path, 16000)
        except EmptyInputError:
            return None
        return "an empty file was not refused as empty_input"
    info = sf.info(str(path))
    try:
        audio = decode_audio(path, info.samplerate)
    except DigitalSilenceError:
        samples, _ = sf.read(str(path), dtype="float32")
        if np.ptp(samples) != 0:
            return "refused as digital silence but soundfile finds sound"
        audio = decode_audio(path, info.samplerate, AudioLimits(reject_silence=False))  # decodes all the same
    except AudioError as exc:
        return f"refused: {exc.code}: {exc}"
    problems = []
    if audio.native_rate != info.samplerate:
        problems.append(f"native rate {audio.native_rate} != {info.samplerate}")
    if len(audio.samples) != info.frames or audio.duration_s != info.frames / info.samplerate:
        problems.append(f"{len(audio.samples)} samples, {audio.duration_s} s != {info.frames} frames")
    if audio.channels != info.channels:
        problems.append(f"{audio.channels} channels != {info.channels}")
    return "; ".join(problems) or None


def test_every_shared_audio_file_decodes_as_soundfile_reports(shared_data: Path) -> None:
    files = _audio_files(shared_data)
    assert len(files) > 7000, f"expected the whole shared data set, found {len(files)} audio files"

    failures = {str(path.relative_to(shared_data)): problem for path in files if (problem := _outcome(path))}

    assert not failures, f"{len(failures)} of {len(files)} files: " + "; ".join(
        f"{name}: {problem}" for name, problem in list(failures.items())[:10]
    )


def test_decoded_samples_equal_soundfiles_own(shared_data: Path) -> None:
    """Bit-exact at the native rate on a spread of files from every dataset (16-bit FLAC is lossless)."""
    files = [path for path in _audio_files(shared_data) if path.stat().st_size > 0][::97]
    compared = 0
    for path in files:
        expected, rate = sf.read(str(path), dtype="float32")
        if np.ptp(expected) == 0:
            continue
        np.testing.assert_array_equal(decode_audio(path, rate).samples, expected, err_msg=str(path))
        compared += 1
    assert compared > 50
