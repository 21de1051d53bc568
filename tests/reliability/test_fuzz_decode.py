"""Hypothesis fuzzing of ``decode_audio`` with mutated real WAV, FLAC, OGG and MP3 files (the volume part).

``tests/service/test_audio.py`` already overwrites random bytes in synthetic sines; these tests go where a
decoder is weakest: the header fields it trusts (channels, rate, declared length, block alignment), bit flips,
cuts inside the header, headers spliced onto other bodies, NaN/Inf samples. The contract under test: any input
ends as decoded finite mono float32 or as an ``AudioError`` with a known code, never another exception, and
never a hang (pytest-timeout bounds each test). About 9,700 inputs per run.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acula.service.audio import ALL_ERRORS, AudioError, AudioLimits, NonFiniteError, decode_audio
from tests.reliability.mutations import GENERATED, WAV_FIELDS, flac_streaminfo, flip_bits, nan_wav, wav_field
from tests.support.audio_cases import REFERENCING_FILES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
CODES = {cls.code for cls in ALL_ERRORS}
# The service's limits at their defaults, with a short max so absurd declared lengths are refused quickly.
LIMITS = AudioLimits(max_seconds=60.0, max_bytes=5 * 1024 * 1024, min_seconds=0.1)


def fuzz(examples: int) -> settings:
    """No deadline (a loaded CI machine is slow, not hung: pytest-timeout catches hangs); no health checks
    (the seeds fixture is session-wide and read-only)."""
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


ABSURD = st.one_of(
    st.sampled_from([0, 1, 2, 3, 7, 8, 9, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 384001, 999_999_999]),
    st.integers(0, 2**32 - 1),
)


def check(data: bytes) -> None:
    """The one property: decoded finite audio, or an AudioError with a documented code."""
    GENERATED["decode"] += 1
    try:
        audio = decode_audio(data, 8000, LIMITS)
    except AudioError as exc:
        assert exc.code in CODES, exc
    else:
        assert audio.samples.dtype.name == "float32" and audio.samples.ndim == 1
        assert audio.samples.size > 0 and bool(abs(audio.samples).max() < float("inf"))


@fuzz(3000)
@given(
    data=st.data(),
    positions=st.lists(st.floats(0, 1), min_size=1, max_size=16),
    bits=st.lists(st.integers(0, 7)),
)
def test_bit_flips(
    seeds: dict[str, bytes], data: st.DataObject, positions: list[float], bits: list[int]
) -> None:
    seed = seeds[data.draw(st.sampled_from(sorted(seeds)))]
    # Half the flips land in the first 64 bytes, where the header is.
    head = data.draw(st.booleans())
    scaled = [p * min(1.0, 64 / len(seed)) for p in positions] if head else positions
    check(flip_bits(seed, scaled, bits or [0]))


@fuzz(2500)
@given(data=st.data(), field=st.sampled_from(WAV_FIELDS), value=ABSURD)
def test_absurd_wav_header_fields(
    seeds: dict[str, bytes], data: st.DataObject, field: str, value: int
) -> None:
    """Huge channel counts, rates of 0 or 4 GHz, lengths of 2**32 bytes, block alignment 0, 65535 bits."""
    name = data.draw(st.sampled_from(sorted(k for k in seeds if k.startswith("wav"))))
    check(wav_field(seeds[name], field, value))


@fuzz(1800)
@given(
    data=st.data(),
    rate=st.one_of(st.none(), st.integers(0, 2**20 - 1)),
    channels=st.one_of(st.none(), st.integers(1, 8)),
    total=st.one_of(st.none(), st.integers(0, 2**36 - 1), st.sampled_from([0, 1, 2**36 - 1])),
)
def test_absurd_flac_streaminfo(
    seeds: dict[str, bytes], data: st.DataObject, rate: int | None, channels: int | None, total: int | None
) -> None:
    name = data.draw(st.sampled_from(sorted(k for k in seeds if k.startswith("flac"))))
    check(flac_streaminfo(seeds[name], rate=rate, channels=channels, total=total))


@fuzz(1800)
@given(data=st.data(), keep=st.integers(0, 256), tail=st.booleans())
def test_truncated_and_spliced_headers(
    seeds: dict[str, bytes], data: st.DataObject, keep: int, tail: bool
) -> None:
    """The first ``keep`` bytes of a file (a cut inside the header), optionally followed by another file's
    body: a header whose claims the bytes after it do not keep."""
    names = sorted(seeds)
    head = seeds[data.draw(st.sampled_from(names))][:keep]
    body = seeds[data.draw(st.sampled_from(names))][keep:] if tail else b""
    if head + body:
        check(head + body)


@fuzz(600)
@given(
    share=st.floats(0.0001, 1.0),
    value=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    rate=st.sampled_from([2000, 4000, 8000, 16000]),
)
def test_non_finite_samples_are_refused_as_such(share: float, value: float, rate: int) -> None:
    GENERATED["decode"] += 1
    with pytest.raises(NonFiniteError):
        decode_audio(nan_wav(rate=rate, share=share, value=value), 8000, LIMITS)


# --- classes from issue 20: levels, decode cost, files that name other files -----------------------------
FLOAT_CONTAINERS = ["WAV", "AIFF", "CAF", "W64", "RF64"]
# Gains from subnormal to the float32 maximum, log-uniform; the tone peaks at the gain.
GAINS = st.one_of(
    st.floats(-45.0, 38.5).map(lambda exponent: min(10.0**exponent, 3.4e38)),
    st.sampled_from([1e-45, 1.0, 1.5, 16.0, 16.5, 1e18, 1.9e19, 3.4e38]),
)
COST_LIMITS = AudioLimits(max_seconds=60.0, max_bytes=5 * 1024 * 1024, min_seconds=0.1, max_samples=400_000)


@fuzz(500)
@given(
    container=st.sampled_from(FLOAT_CONTAINERS),
    gain=GAINS,
    spikes=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), GAINS, st.booleans()), max_size=3),
    channels=st.integers(1, 2),
)
def test_extreme_but_finite_levels_are_refused_or_decoded_within_range(
    container: str, gain: float, spikes: list[tuple[float, float, bool]], channels: int
) -> None:
    """Any finite float: decoded with every sample within ``max_level`` (so the encoder's arithmetic cannot
    overflow), or refused with a documented code; never NaN out of finite samples (a stereo mix of two
    3.4e38 channels would overflow float32)."""
    GENERATED["decode"] += 1
    tone = np.sin(2 * np.pi * 220 * np.arange(4000) / 8000)
    samples = np.repeat((tone * gain)[:, None], channels, axis=1)
    for position, value, negative in spikes:
        samples[int(position * len(samples)), -1] = -value if negative else value
    data = encode_float(samples.astype(np.float32), 8000, container)
    try:
        audio = decode_audio(data, 8000, LIMITS)
    except AudioError as exc:
        assert exc.code in CODES, exc
    else:
        peak = float(np.abs(audio.samples).max())
        assert np.isfinite(audio.samples).all() and peak <= LIMITS.max_level * 1.01


@fuzz(400)
@given(
    rate=st.sampled_from([1000, 2000, 8000, 44100, 96000, 192000, 384000, 655350]),
    channels=st.integers(1, 8),
    declared=st.one_of(st.just(0), st.integers(1, 2**36 - 1), st.sampled_from([399_999, 400_000, 400_001])),
    seconds=st.sampled_from([0.2, 1.0, 3.0]),
)
def test_declared_rates_lengths_and_channels_never_cost_more_than_the_budget(
    rate: int, channels: int, declared: int, seconds: float
) -> None:
    """FLAC headers claiming any rate, channel count and length (0: unset) on real audio: a decode that
    succeeds never holds more than ``max_samples`` frames x channels, and a header claiming more is refused
    before decoding (``too_many_samples`` or ``too_long``), whatever the rest of the file holds."""
    GENERATED["decode"] += 1
    data = flac_streaminfo(encode_flac(seconds, min(rate, 96000), channels), rate=rate, total=declared)
    try:
        audio = decode_audio(data, 8000, COST_LIMITS)
    except AudioError as exc:
        assert exc.code in CODES, exc
        if declared and declared * channels > COST_LIMITS.max_samples and exc.code not in HEADER_CODES:
            pytest.fail(f"a header declaring {declared * channels} samples was decoded before {exc.code}")
    else:
        assert round(audio.duration_s * audio.native_rate) * audio.channels <= COST_LIMITS.max_samples


HEADER_CODES = {"too_many_samples", "too_long", "rate_out_of_range", "too_many_channels", "truncated"}
NAMES = [
    "evidence",
    "./evidence",
    "file:evidence",
    "subfile,,start,0,end,0,,:evidence",
    "{abs}",
    "file:{abs}",
]
NAMES += [
    "concat:evidence|evidence",
    "http://127.0.0.1:9/x.wav",
    "pipe:0",
    "/proc/self/environ",
    "../evidence",
]


@fuzz(300)
@given(
    kind=st.sampled_from(sorted(REFERENCING_FILES)),
    name=st.sampled_from(NAMES),
    padding=st.sampled_from([b"", b"\n", b"\xef\xbb\xbf", b"ID3"]),
)
def test_uploads_naming_other_files_are_refused_without_opening_them(
    fifo_dir: Path, kind: str, name: str, padding: bytes
) -> None:
    """Playlists, concat scripts, manifests and SDP files naming a FIFO in the working directory (by every
    spelling: relative, absolute, as a URL or a protocol): refused, and never followed, since following one
    would block on the FIFO (the decode would hang and the test time out)."""
    GENERATED["decode"] += 1
    text = REFERENCING_FILES[kind].format(name=name.format(abs=fifo_dir / "evidence"))
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(_code(padding + text.encode())), daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(fifo_dir / "evidence", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"decoding a {kind} upload naming {name!r} opened it")
    assert outcome and outcome[0] in CODES, outcome


def _code(data: bytes) -> str:
    try:
        decode_audio(data, 8000, LIMITS)
    except AudioError as exc:
        return exc.code
    return "decoded"


@pytest.fixture(scope="module")
def fifo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("fifo")
    os.mkfifo(folder / "evidence")
    previous = Path.cwd()
    os.chdir(folder)  # relative names resolve here (monkeypatch is function-scoped)
    try:
        yield folder
    finally:
        os.chdir(previous)


def encode_float(samples: np.ndarray, rate: int, container: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=container, subtype="FLOAT")
    return buffer.getvalue()


def encode_flac(seconds: float, rate: int, channels: int) -> bytes:
    """A tone with a little noise (not digital silence), as FLAC."""
    rng = np.random.default_rng(channels)
    frames = round(seconds * rate)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(frames) / rate)
    samples = tone[:, None] + 0.01 * rng.standard_normal((frames, channels))
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()
