"""service.audio: every supported format round-trips, every malformed input gets its own error.

All inputs are generated in memory by :mod:`tests.support.audio_cases` (real encoders: libsndfile and
FFmpeg), then damaged byte by byte where a case needs it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from acula.service.audio import (
    ALL_ERRORS,
    AudioError,
    AudioLimits,
    DigitalSilenceError,
    EmptyInputError,
    FileNotFoundAudioError,
    FormatChangesError,
    LevelOutOfRangeError,
    NonFiniteError,
    NotAudioError,
    RateOutOfRangeError,
    TooLargeError,
    TooLongError,
    TooManyChannelsError,
    TooManySamplesError,
    TooShortError,
    TruncatedAudioError,
    UnsupportedCodecError,
    decode_audio,
    probe_audio,
)
from tests.support.audio_cases import (
    FLOAT_CONTAINERS,
    REFERENCING_FILES,
    SOUNDFILE_FORMATS,
    cut,
    dominant_frequency,
    encode,
    encode_av,
    encode_m4a,
    encode_video_only_mp4,
    flac_claiming_frames,
    mp3_joined,
    mp3_without_xing,
    random_bytes,
    scaled_float,
    sine,
    wav_claiming_seconds,
    wav_with_block_align,
    with_wav_format_tag,
)


def _params(cases: list) -> list:
    """``(id, *values)`` tuples as pytest params named by their id."""
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


LOSSLESS_STEP = {"PCM_U8": 1 / 128, "PCM_16": 1 / 32768, "PCM_24": 1 / 2**23, "PCM_32": 1 / 2**31}


# --- formats that must decode --------------------------------------------------------------------------
@pytest.mark.parametrize(("container", "subtype", "rate"), _params(SOUNDFILE_FORMATS))
def test_every_soundfile_format_round_trips_at_its_native_rate(
    container: str, subtype: str, rate: int
) -> None:
    original = sine(seconds=2.0, rate=rate)
    audio = decode_audio(encode(original, rate, container, subtype), target_rate=rate)

    assert (audio.format, audio.subtype) == (container, subtype)
    assert audio.native_rate == rate and audio.rate == rate and audio.channels == 1
    assert audio.duration_s == pytest.approx(2.0, abs=1e-9)
    assert audio.samples.dtype == np.float32 and audio.samples.shape == original.shape
    if subtype in LOSSLESS_STEP or subtype in ("FLOAT", "DOUBLE"):
        assert np.max(np.abs(audio.samples - original)) <= LOSSLESS_STEP.get(subtype, 1e-7)
    else:  # lossy codecs: the same tone, not the same samples
        assert dominant_frequency(audio.samples, rate) == pytest.approx(440.0, abs=1.0)
        assert np.sqrt(np.mean(audio.samples**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_m4a_aac_is_decoded_through_pyav() -> None:
    audio = decode_audio(encode_m4a(sine(seconds=2.0, rate=16000), 16000), target_rate=16000)

    assert (audio.format, audio.subtype, audio.native_rate) == ("MP4", "AAC", 16000)
    assert audio.duration_s == pytest.approx(2.0, abs=0.15)  # AAC adds encoder priming and padding
    assert dominant_frequency(audio.samples, 16000) == pytest.approx(440.0, abs=1.0)


# (test id, codec, container, rate, channels, expected format and subtype): formats only FFmpeg reads.
AV_FORMATS = [
    ("m4a-aac-stereo", "aac", "mp4", 44100, 2, ("MP4", "AAC")),
    ("m4a-alac", "alac", "mp4", 16000, 1, ("MP4", "ALAC")),
    ("adts-aac", "aac", "adts", 16000, 1, ("AAC", "AAC")),
    ("webm-opus", "libopus", "webm", 48000, 1, ("MATROSKA", "OPUS")),
]


@pytest.mark.parametrize(("codec", "container", "rate", "channels", "expected"), _params(AV_FORMATS))
def test_pyav_formats_decode(codec: str, container: str, rate: int, channels: int, expected: tuple) -> None:
    audio = decode_audio(
        encode_av(sine(seconds=2.0, rate=rate, channels=channels), rate, codec, container), 16000
    )

    assert (audio.format, audio.subtype) == expected
    assert (audio.native_rate, audio.channels) == (rate, channels)
    assert audio.duration_s == pytest.approx(2.0, abs=0.15)
    assert dominant_frequency(audio.samples, 16000) == pytest.approx(440.0, abs=1.0)


def test_flac_with_unset_length_is_decoded_in_full() -> None:
    data = flac_claiming_frames(encode(sine(seconds=2.0), 16000, "FLAC"), 0)

    assert probe_audio(data).frames is None
    assert decode_audio(data, 16000).duration_s == pytest.approx(2.0, abs=1e-9)


@pytest.mark.parametrize(("native", "target"), [(4000, 16000), (8000, 16000), (44100, 16000), (16000, 8000)])
def test_resampling_keeps_pitch_length_and_level(native: int, target: int) -> None:
    audio = decode_audio(encode(sine(440.0, seconds=3.0, rate=native), native), target_rate=target)

    assert audio.rate == target and audio.native_rate == native
    assert abs(len(audio.samples) - 3.0 * target) <= 1
    assert dominant_frequency(audio.samples, target) == pytest.approx(440.0, abs=0.2)
    steady = audio.samples[target // 10 : -target // 10]  # leave out the filter's edges
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_channels_are_averaged_to_mono() -> None:
    left = sine(440.0, seconds=1.0, rate=8000)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    audio = decode_audio(encode(stereo, 8000, "WAV", "FLOAT"), target_rate=8000)

    assert audio.channels == 2
    np.testing.assert_allclose(audio.samples, left / 2, atol=1e-7)


def test_a_path_and_its_bytes_decode_alike(tmp_path) -> None:
    data = encode(sine(seconds=1.0, rate=8000), 8000, "FLAC")
    path = tmp_path / "tone.flac"
    path.write_bytes(data)

    from_path, from_bytes = decode_audio(path, 16000), decode_audio(data, 16000)
    np.testing.assert_array_equal(from_path.samples, from_bytes.samples)
    np.testing.assert_array_equal(decode_audio(str(path), 16000).samples, from_bytes.samples)
    assert decode_audio(bytearray(data), 16000).duration_s == from_bytes.duration_s


def test_probe_reads_the_header_only() -> None:
    info = probe_audio(encode(sine(channels=2, seconds=1.5, rate=8000), 8000, "FLAC", "PCM_24"))

    assert (info.format, info.subtype, info.channels, info.native_rate) == ("FLAC", "PCM_24", 2, 8000)
    assert info.frames == 12000 and info.duration_s == pytest.approx(1.5)
    assert info.decoder == "soundfile"


def test_threads_decode_independently() -> None:
    inputs = [encode(sine(220.0 * (i + 1), seconds=1.0, rate=8000), 8000, "FLAC") for i in range(8)]
    expected = [decode_audio(data, 16000).samples for data in inputs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda data: decode_audio(data, 16000).samples, inputs * 4))
    for index, samples in enumerate(results):
        np.testing.assert_array_equal(samples, expected[index % len(inputs)])


# --- inputs that must be refused, each with its own error ----------------------------------------------
def _nan_wav() -> bytes:
    samples = sine(seconds=1.0)
    samples[1234] = np.nan
    return encode(samples, 16000, "WAV", "FLOAT")


def _inf_float_wav() -> bytes:
    samples = sine(seconds=1.0)
    samples[-1] = np.inf
    return encode(samples, 16000, "WAV", "FLOAT")


WAV = encode(sine(seconds=2.0), 16000)
FLAC = encode(sine(seconds=2.0), 16000, "FLAC")

MALFORMED = [
    ("zero-bytes", lambda: b"", None, EmptyInputError),
    ("random-bytes", lambda: random_bytes(4096), None, NotAudioError),
    ("text", lambda: b"patient id, age\n" * 64, None, NotAudioError),
    ("video-without-audio", encode_video_only_mp4, None, NotAudioError),
    ("riff-but-not-wave", lambda: b"RIFF\x24\x00\x00\x00AVI " + bytes(64), None, NotAudioError),
    ("wav-cut-in-half", lambda: cut(WAV), None, TruncatedAudioError),
    ("wav-cut-in-its-header", lambda: WAV[:30], None, TruncatedAudioError),
    ("flac-cut-in-half", lambda: cut(FLAC), None, TruncatedAudioError),
    ("ogg-cut-in-half", lambda: cut(encode(sine(), 16000, "OGG", "VORBIS")), None, TruncatedAudioError),
    (
        "mp3-cut-in-half",
        lambda: cut(encode(sine(), 16000, "MP3", "MPEG_LAYER_III")),
        None,
        TruncatedAudioError,
    ),
    ("m4a-cut-in-half", lambda: cut(encode_m4a(sine(), 16000)), None, TruncatedAudioError),
    ("wav-header-claims-10h", lambda: wav_claiming_seconds(WAV, 36000), None, TooLongError),
    ("flac-header-claims-10h", lambda: flac_claiming_frames(FLAC, 16000 * 36000), None, TooLongError),
    ("wav-unknown-format-tag", lambda: with_wav_format_tag(WAV, 0x1234), None, UnsupportedCodecError),
    (
        "9-channels",
        lambda: encode(sine(channels=9), 16000),
        AudioLimits(max_channels=8),
        TooManyChannelsError,
    ),
    ("500-hz", lambda: encode(sine(100.0, rate=500), 500), None, RateOutOfRangeError),
    ("500-khz", lambda: encode(sine(rate=500_000, seconds=0.2), 500_000), None, RateOutOfRangeError),
    ("0.1-s", lambda: encode(sine(seconds=0.1), 16000), AudioLimits(min_seconds=0.5), TooShortError),
    ("no-samples", lambda: encode(np.zeros(0, np.float32), 16000), None, TooShortError),
    ("too-long", lambda: WAV, AudioLimits(max_seconds=1.0), TooLongError),
    ("too-large", lambda: WAV, AudioLimits(max_bytes=10_000), TooLargeError),
    ("nan-float-wav", _nan_wav, None, NonFiniteError),
    ("inf-float-wav", _inf_float_wav, None, NonFiniteError),
    ("float-wav-at-1e18", lambda: scaled_float("WAV", 1e18), None, LevelOutOfRangeError),
    (
        "flac-declaring-600-s-at-384-khz",
        lambda: flac_claiming_frames(encode(sine(seconds=0.2, rate=384000), 384000, "FLAC"), 599 * 384000),
        None,
        TooManySamplesError,
    ),
    ("mp3-rate-changes", lambda: mp3_joined((16000, 2.0), (8000, 2.0)), None, FormatChangesError),
    ("all-zero-wav", lambda: encode(np.zeros(16000, np.float32), 16000), None, DigitalSilenceError),
    ("constant-dc-wav", lambda: encode(np.full(16000, 0.25, np.float32), 16000), None, DigitalSilenceError),
]


@pytest.mark.parametrize(("make", "limits", "error"), _params(MALFORMED))
def test_malformed_input_gets_its_own_error(
    make, limits: AudioLimits | None, error: type[AudioError]
) -> None:
    with pytest.raises(AudioError) as caught:
        decode_audio(make(), target_rate=16000, limits=limits)

    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    assert caught.value.code == error.code
    assert len(str(caught.value)) > 20  # a sentence the user can act on, not a bare code


def test_every_error_class_is_exercised_and_has_a_distinct_code() -> None:
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(set(codes)) == len(codes)
    exercised = {case[3] for case in MALFORMED} | {FileNotFoundAudioError}
    assert exercised == set(ALL_ERRORS)


def test_every_error_code_has_an_http_status() -> None:
    from acula.service.api.errors import ERROR_MAP

    assert {cls.code for cls in ALL_ERRORS} <= set(ERROR_MAP)


def test_a_missing_path_is_reported_as_such(tmp_path) -> None:
    with pytest.raises(FileNotFoundAudioError, match="not a file"):
        decode_audio(tmp_path / "absent.wav", 16000)
    with pytest.raises(FileNotFoundAudioError):
        decode_audio(tmp_path, 16000)


def test_a_lying_length_stops_decoding_at_max_seconds() -> None:
    """A FLAC whose header gives no length is decoded only up to the limit, not to its end."""
    data = flac_claiming_frames(encode(sine(seconds=20.0, rate=8000), 8000, "FLAC"), 0)
    with pytest.raises(TooLongError, match="decoding passed 3 s"):
        decode_audio(data, 8000, AudioLimits(max_seconds=3.0))


def test_silence_can_be_allowed() -> None:
    audio = decode_audio(encode(np.zeros(8000, np.float32), 8000), 8000, AudioLimits(reject_silence=False))
    assert audio.duration_s == 1.0 and not audio.samples.any()


def test_probe_reports_what_a_wav_header_claims_and_decode_judges_it() -> None:
    assert probe_audio(WAV).frames == 32000
    assert probe_audio(cut(WAV)).frames == 32000  # libsndfile alone would say 16000
    assert probe_audio(wav_claiming_seconds(WAV, 36000)).duration_s == 36000
    with pytest.raises(TruncatedAudioError, match="declares 2.00 s but the file holds only 1.00 s"):
        decode_audio(cut(WAV), 16000)


def test_probe_refuses_what_is_not_audio() -> None:
    with pytest.raises(NotAudioError):
        probe_audio(random_bytes())
    with pytest.raises(UnsupportedCodecError, match="0x1234"):
        probe_audio(with_wav_format_tag(WAV, 0x1234))


def test_limits_are_validated() -> None:
    with pytest.raises(ValidationError):
        AudioLimits(min_seconds=10.0, max_seconds=1.0)
    with pytest.raises(ValidationError):
        AudioLimits(max_channels=0)
    for rate in (0, -8000, 16000.0):
        with pytest.raises(ValueError, match="target_rate"):
            decode_audio(WAV, rate)  # type: ignore[arg-type]
    assert decode_audio(WAV, np.int64(8000)).rate == 8000  # type: ignore[arg-type]


# --- no input raises anything but AudioError -----------------------------------------------------------
SEEDS = {
    "wav": WAV[:4000],
    "wav-24-stereo": encode(sine(seconds=0.3, channels=2), 16000, "WAV", "PCM_24"),
    "flac": encode(sine(seconds=0.5), 16000, "FLAC"),
    "ogg": encode(sine(seconds=0.5), 16000, "OGG", "VORBIS"),
    "opus": encode(sine(seconds=0.5, rate=48000), 48000, "OGG", "OPUS"),
    "mp3": encode(sine(seconds=0.5), 16000, "MP3", "MPEG_LAYER_III"),
    "m4a": encode_m4a(sine(seconds=0.5), 16000),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    keep=st.floats(0.0, 1.0),
)
def test_damaged_files_raise_only_audio_errors(
    seed: str, edits: list[tuple[float, int]], keep: float
) -> None:
    data = bytearray(SEEDS[seed])
    for position, value in edits:
        data[int(position * len(data))] = value
    data = data[: max(1, int(keep * len(data)))]
    try:
        audio = decode_audio(bytes(data), 16000)
    except AudioError as exc:
        assert exc.code in {cls.code for cls in ALL_ERRORS}
    else:
        assert audio.samples.dtype == np.float32 and np.isfinite(audio.samples).all()


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=2048))
def test_arbitrary_bytes_raise_only_audio_errors(data: bytes) -> None:
    for head in (b"", b"RIFF", b"fLaC", b"OggS", b"ID3", b"\x00\x00\x00\x18ftypM4A "):
        with contextlib.suppress(AudioError):  # any other exception fails the test
            decode_audio(head + data, 16000)


def test_wav_with_data_before_fmt_is_truncated_not_a_crash() -> None:
    body = b"data" + struct.pack("<I", 4) + b"\x00\x00\x00\x00"
    data = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body
    with pytest.raises(TruncatedAudioError):
        decode_audio(data, 16000)


# --- hostile inputs (issue 20): levels, decode cost, streams that change, files that reference files ------
@pytest.mark.parametrize("container", FLOAT_CONTAINERS)
@pytest.mark.parametrize("peak", [1.7e1, 1e18, 1.9e19, 3.4e38])
def test_finite_but_absurd_float_levels_are_refused_in_every_float_container(
    container: str, peak: float
) -> None:
    """Samples the finiteness check passes but the encoder's arithmetic cannot: refused before decoding
    ends, by the decoder, so no caller (service, CLI, training) can feed them to a model."""
    with pytest.raises(LevelOutOfRangeError, match="full scale"):
        decode_audio(scaled_float(container, peak), 8000)


@pytest.mark.parametrize("container", FLOAT_CONTAINERS)
def test_float_levels_a_little_above_full_scale_are_kept_as_they_are(container: str) -> None:
    audio = decode_audio(scaled_float(container, 4.0), 8000)
    assert float(np.abs(audio.samples).max()) == pytest.approx(4.0, rel=1e-3)


def test_a_single_huge_sample_is_refused_and_located() -> None:
    samples = sine(seconds=1.0, rate=8000)
    samples[4000] = 3.4e38
    with pytest.raises(LevelOutOfRangeError, match=r"sample 4000 \(at 0.500 s\)"):
        decode_audio(encode(samples, 8000, "WAV", "FLOAT"), 8000)


def test_the_sample_budget_counts_rate_and_channels_not_only_duration() -> None:
    """100 s is well within max_seconds, but at 384 kHz with 2 channels it is 77 M samples to decode."""
    stereo = encode(sine(seconds=0.2, rate=384000, channels=2), 384000, "FLAC")
    with pytest.raises(TooManySamplesError, match="declares 76,800,000 samples"):
        decode_audio(flac_claiming_frames(stereo, 100 * 384000), 8000)
    assert decode_audio(stereo, 8000).duration_s == pytest.approx(0.2)


def test_a_decode_without_a_declared_length_stops_at_the_sample_budget() -> None:
    data = flac_claiming_frames(encode(sine(seconds=3.0, rate=96000), 96000, "FLAC"), 0)
    with pytest.raises(TooManySamplesError, match="decoding passed 100,000 samples"):
        decode_audio(data, 8000, AudioLimits(max_samples=100_000))


def test_high_rate_audio_is_never_held_at_its_native_rate() -> None:
    """A 30-s FLAC at 384 kHz with its length unset: 46 MB of float32 at the native rate, 1 MB at 8 kHz.
    Resampled as it is decoded, the decode's peak allocation stays a small multiple of the output."""
    import tracemalloc

    data = flac_claiming_frames(encode(sine(seconds=30.0, rate=384000), 384000, "FLAC"), 0)
    tracemalloc.start()
    try:
        audio = decode_audio(data, 8000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    native_bytes = 30 * 384000 * 4
    assert audio.duration_s == pytest.approx(30.0) and len(audio.samples) == 240000
    assert peak < native_bytes / 4, f"peak {peak / 1e6:.1f} MB for {native_bytes / 1e6:.0f} MB at native rate"


def test_chunked_resampling_equals_one_shot_resampling() -> None:
    import soxr

    native = sine(440.0, seconds=7.3, rate=44100)
    audio = decode_audio(encode(native, 44100, "WAV", "FLOAT"), 8000)
    np.testing.assert_array_equal(audio.samples, soxr.resample(native, 44100, 8000, quality="HQ"))


def test_an_mp3_is_decoded_to_its_end_without_a_xing_header() -> None:
    """libsndfile stopped such a file at the length it estimated from the first frame (a third of it)."""
    assert decode_audio(mp3_without_xing(3.0), 16000).duration_s == pytest.approx(3.0, abs=0.15)


def test_an_mp3_whose_rate_changes_says_so() -> None:
    with pytest.raises(FormatChangesError, match="16000 Hz") as caught:
        decode_audio(mp3_joined((16000, 3.0), (8000, 6.0)), 8000)
    assert "8000 Hz" in str(caught.value)


@pytest.mark.parametrize("block_align", [0, 1, 7, 65535])
def test_a_wrong_wav_block_align_is_not_reported_as_cut_short(block_align: int) -> None:
    """libsndfile decodes PCM with channels x bytes per sample whatever block_align says; so does the
    completeness check, which took block_align 0 for a file claiming twice its length."""
    audio = decode_audio(wav_with_block_align(encode(sine(seconds=2.0), 16000), block_align), 16000)
    assert audio.duration_s == pytest.approx(2.0)


@pytest.mark.parametrize("kind", sorted(REFERENCING_FILES))
def test_an_upload_that_names_other_files_never_makes_the_decoder_open_them(
    kind: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The named file is a FIFO: opening it for reading blocks until a writer comes, so a decoder that
    follows the reference hangs instead of answering. Refused as not audio, with nothing opened."""
    import os
    import threading

    monkeypatch.chdir(tmp_path)
    os.mkfifo("evidence")
    data = REFERENCING_FILES[kind].format(name="evidence").encode()
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_refusal(data)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # unblock the decoder's open() before failing
        with contextlib.suppress(OSError):
            os.close(os.open("evidence", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"the {kind} upload made the decoder open a file it names")
    assert outcome == ["not_audio"]


def _refusal(data: bytes) -> str:
    try:
        decode_audio(data, 8000)
    except AudioError as exc:
        return exc.code
    return "decoded"


def test_eight_channels_through_ffmpeg_do_not_crash() -> None:
    """A FLAC of 8 channels with its length unset goes to PyAV, which read planar 8-channel frames past
    their last plane: a segfault the decode fuzzer found (now converted to packed samples)."""
    data = flac_claiming_frames(encode(sine(seconds=0.5, rate=8000, channels=8), 8000, "FLAC"), 0)
    audio = decode_audio(data, 8000)
    assert audio.channels == 8 and audio.duration_s == pytest.approx(0.5)
