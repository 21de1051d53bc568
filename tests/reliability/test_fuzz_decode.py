"""Hypothesis fuzzing of ``decode_audio`` with mutated real WAV, FLAC, OGG and MP3 files (the volume part).

``tests/service/test_audio.py`` already overwrites random bytes in synthetic sines; these tests go where a
decoder is weakest: the header fields it trusts (channels, rate, declared length, block alignment), bit flips,
cuts inside the header, headers spliced onto other bodies, NaN/Inf samples. The contract under test: any input
ends as decoded finite mono float32 or as an ``AudioError`` with a known code, never another exception, and
never a hang (pytest-timeout bounds each test). About 9,700 inputs per run.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acula.service.audio import ALL_ERRORS, AudioError, AudioLimits, NonFiniteError, decode_audio
from tests.reliability.mutations import GENERATED, WAV_FIELDS, flac_streaminfo, flip_bits, nan_wav, wav_field

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
