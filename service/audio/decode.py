"""Bytes or a path in, validated mono float32 at the requested rate out.

The order of work is what bounds the cost of a decode, whatever the input claims: the size of the input is
checked first, then the header (channels, rate, declared length, and the number of samples all that adds up
to) before a single sample is decoded; then the audio is decoded in blocks, each block checked (NaN/Inf, a
level far beyond full scale), averaged to mono and resampled with soxr ('HQ') as a stream, and decoding
stops as soon as it passes ``max_seconds`` or ``max_samples`` (MP3 and OGG headers may understate the
length, a FLAC header may leave it unset). So the audio is never held at its native rate: memory is the
output at the target rate plus one block, however high the native rate. Chunked resampling gives exactly the
samples of a one-shot ``soxr.resample``.

Nothing here is shared between calls, so any number of threads may decode at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import operator
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from acula.service.audio.errors import (
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
)
from acula.service.audio.readers import (
    AudioReader,
    AvReader,
    ReaderFormatChange,
    ReaderOpenError,
    ReaderReadError,
    SoundfileReader,
)
from acula.service.audio.schema import AudioInfo, AudioLimits, DecodedAudio
from acula.service.audio.sniff import (
    WavHeader,
    WavHeaderError,
    read_wav_header,
    sniff_container,
)

AudioSource = bytes | bytearray | memoryview | str | Path
SUPPORTED = "PCM WAV, FLAC, OGG (Vorbis or Opus), MP3 or M4A (AAC)"
# Share of the declared length that may be missing before a file counts as truncated: exact headers (WAV,
# FLAC, OGG) get 1 %, estimated ones (MP3 without a seek table, AAC) 10 %.
EXACT_TOLERANCE = 0.01
ESTIMATE_TOLERANCE = 0.10
# Containers libsndfile knows: when it calls one of these malformed, the file is damaged, not exotic.
_SOUNDFILE_CONTAINERS = {"FLAC", "OGG", "AIFF", "CAF", "RF64"}
_FEWER_SAMPLES = "resample it to 48 kHz or less, mix it down to mono, or cut it into parts"
# Containers FFmpeg reads even though libsndfile opens them (see AvReader for why MP3 is one).
_AV_FIRST = {"MP3"}


def probe_audio(source: AudioSource, limits: AudioLimits | None = None) -> AudioInfo:
    """What the header claims: format, codec, channels, rate and declared length.

    Only the size limit applies; whether the claims hold (length, completeness, limits) is for
    :func:`decode_audio` to judge, so ``acula audio inspect`` can show a lying header next to its error.
    """
    limits = limits or AudioLimits()
    with _open_source(source, limits.max_bytes) as (handle, size):
        reader, _ = _open_reader(handle, size)
        reader.close()
    return reader.info


def decode_audio(source: AudioSource, target_rate: int, limits: AudioLimits | None = None) -> DecodedAudio:
    """Decode ``source`` to mono float32 at ``target_rate`` Hz or raise an ``AudioError`` saying why not."""
    try:
        target_rate = operator.index(target_rate)  # accepts numpy integers, refuses floats
    except TypeError:
        raise ValueError(f"target_rate must be an integer number of Hz, not {target_rate!r}") from None
    if target_rate <= 0:
        raise ValueError(f"target_rate must be a positive number of Hz, not {target_rate!r}")
    limits = limits or AudioLimits()
    with _open_source(source, limits.max_bytes) as (handle, size):
        reader, wav = _open_reader(handle, size)
        try:
            info = reader.info
            _check_header(info, limits)
            if wav is not None:
                _check_wav_complete(wav, size, info)
            mono, decoded, (low, high) = _read_mono(reader, info, limits, target_rate)
        finally:
            reader.close()
    _check_decoded(decoded, low, high, info, reader.exact_length, limits)
    return DecodedAudio(
        samples=np.ascontiguousarray(mono, dtype=np.float32),
        rate=target_rate,
        native_rate=info.native_rate,
        duration_s=decoded / info.native_rate,
        channels=info.channels,
        format=info.format,
        subtype=info.subtype,
    )


# --- input ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _open_source(source: AudioSource, max_bytes: int) -> Iterator[tuple[BinaryIO, int]]:
    """A seekable handle and the input's size in bytes, after the empty and too-large checks.

    Paths are opened here, never handed to FFmpeg as strings, so a "path" cannot be a URL or a protocol.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_size(len(data), max_bytes, "the upload")
        yield io.BytesIO(data), len(data)
        return
    if not isinstance(source, str | Path):
        raise TypeError(f"audio source must be bytes or a path, not {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundAudioError(f"{path} is not a file: check the path")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise FileNotFoundAudioError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        _check_size(size, max_bytes, path.name)
        yield handle, size


def _check_size(size: int, max_bytes: int, what: str) -> None:
    if size == 0:
        raise EmptyInputError(f"{what} is empty (0 bytes): send the recording file itself")
    if size > max_bytes:
        raise TooLargeError(
            f"{what} is {_human_bytes(size)}, more than the {_human_bytes(max_bytes)} accepted: "
            "send a shorter recording or a compressed format such as FLAC"
        )


# --- header -----------------------------------------------------------------------------------------------
def _open_reader(handle: BinaryIO, size: int) -> tuple[AudioReader, WavHeader | None]:
    """Open with libsndfile, else PyAV; turn a failure of both into the error the magic bytes point to."""
    kind = sniff_container(handle.read(16))
    if kind == "WAV":
        return _open_wav(handle, size)
    if kind in _AV_FIRST:
        return _open_with_av(handle, size, kind), None
    try:
        reader: AudioReader = SoundfileReader(handle, size)
    except ReaderOpenError as first:
        if first.reason == "malformed" and kind in _SOUNDFILE_CONTAINERS:
            raise TruncatedAudioError(
                f"this {kind} file is damaged or cut short ({first}): export or upload it again"
            ) from first
    else:
        if reader.info.frames is not None:
            return reader, None
        reader.close()  # the header leaves the length unset: FFmpeg decodes such streams more robustly
    return _open_with_av(handle, size, kind), None


def _open_with_av(handle: BinaryIO, size: int, kind: str | None) -> AudioReader:
    try:
        return AvReader(handle, size)
    except ReaderOpenError as exc:
        if exc.reason == "no_decoder":
            raise UnsupportedCodecError(
                f"the {kind or 'audio'} stream uses a codec this service cannot decode ({exc}): "
                f"convert it to {SUPPORTED}"
            ) from exc
        if kind is None or exc.reason == "no_audio":
            detail = f" ({exc})" if exc.reason == "no_audio" else ""
            raise NotAudioError(
                f"the input is not a recording in a supported format{detail}: send {SUPPORTED}"
            ) from exc
        raise TruncatedAudioError(
            f"the input has a {kind} header but cannot be parsed ({exc}): it is damaged or cut short"
        ) from exc


def _open_wav(handle: BinaryIO, size: int) -> tuple[AudioReader, WavHeader]:
    """WAV goes to libsndfile only, after our own header read (see :mod:`service.audio.sniff` for why)."""
    try:
        header = read_wav_header(handle)
    except WavHeaderError as exc:
        raise TruncatedAudioError(f"this WAV file is damaged or cut short: {exc}") from exc
    try:
        reader = SoundfileReader(handle, size)
    except ReaderOpenError as exc:
        raise UnsupportedCodecError(
            f"this WAV file is encoded with {header.codec_name} ({header.bits}-bit, {header.channels} "
            f"channel(s)), which cannot be decoded ({exc}): convert it to {SUPPORTED}"
        ) from exc
    declared = dataclasses.replace(reader.info, frames=header.declared_frames(size))
    reader.info = declared
    return reader, header


def _check_header(info: AudioInfo, limits: AudioLimits) -> None:
    """Everything the header lets us refuse before decoding."""
    if info.channels < 1:
        raise UnsupportedCodecError(f"the {info.format} header declares {info.channels} channels")
    if info.channels > limits.max_channels:
        raise TooManyChannelsError(
            f"the recording has {info.channels} channels; at most {limits.max_channels} are accepted: "
            "mix it down to mono first (for example `ffmpeg -i in.wav -ac 1 out.flac`)"
        )
    if not limits.min_rate <= info.native_rate <= limits.max_rate:
        raise RateOutOfRangeError(
            f"the sample rate is {info.native_rate} Hz; accepted rates are {limits.min_rate} to "
            f"{limits.max_rate} Hz: check the recorder's settings or the file's header"
        )
    if info.duration_s is not None and info.duration_s > limits.max_seconds:
        raise TooLongError(
            f"the header declares {info.duration_s:.1f} s of audio; at most {limits.max_seconds:g} s is "
            "accepted: cut the recording into shorter parts"
        )
    if info.frames is not None and info.frames * info.channels > limits.max_samples:
        raise TooManySamplesError(
            f"the header declares {info.frames * info.channels:,} samples ({_seconds(info)} at "
            f"{info.native_rate} Hz with {info.channels} channel(s)); at most {limits.max_samples:,} are "
            f"decoded per recording: {_FEWER_SAMPLES}"
        )


def _check_wav_complete(header: WavHeader, size: int, info: AudioInfo) -> None:
    declared, available = header.declared_frames(size), header.available_frames(size)
    if declared - available > EXACT_TOLERANCE * declared:
        rate = info.native_rate
        raise TruncatedAudioError(
            f"the WAV header declares {declared / rate:.2f} s but the file holds only "
            f"{available / rate:.2f} s: "
            "it was cut short (an interrupted upload or copy); send the complete file"
        )


# --- samples ---------------------------------------------------------------------------------------------
def _read_mono(
    reader: AudioReader, info: AudioInfo, limits: AudioLimits, target_rate: int
) -> tuple[np.ndarray, int, tuple[float, float]]:
    """Decode block by block, check each block, mix it to mono and resample it as a stream, stopping past
    ``max_seconds`` or ``max_samples``. Returns the samples at ``target_rate``, the number of native frames
    decoded, and the lowest and highest sample (for the silence check)."""
    rate = info.native_rate
    max_frames = math.floor(limits.max_seconds * rate)
    resampler = None
    if rate != target_rate:
        import soxr

        resampler = soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
    parts: list[np.ndarray] = []
    total, samples, low, high = 0, 0, math.inf, -math.inf
    try:
        for block in reader.blocks():
            if block.shape[1] > limits.max_channels:
                raise TooManyChannelsError(
                    f"the stream switches to {block.shape[1]} channels; "
                    f"at most {limits.max_channels} are accepted"
                )
            block_low, block_high = _check_levels(block, total, rate, limits)
            low, high = min(low, block_low), max(high, block_high)
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            total += len(block)
            samples += block.size
            if total > max_frames:
                raise TooLongError(
                    f"decoding passed {limits.max_seconds:g} s, the longest recording accepted "
                    f"(the header declared {_seconds(info)}): cut the recording into shorter parts"
                )
            if samples > limits.max_samples:
                raise TooManySamplesError(
                    f"decoding passed {limits.max_samples:,} samples, the most decoded per recording "
                    f"({total / rate:.1f} s at {rate} Hz with {block.shape[1]} channel(s); the header "
                    f"declared {_seconds(info)}): {_FEWER_SAMPLES}"
                )
            parts.append(resampler.resample_chunk(mono) if resampler is not None else mono.copy())
    except ReaderFormatChange as exc:
        raise FormatChangesError(
            f"the stream's format changes part way through ({exc}): it is several recordings joined "
            "together or a broken export; export it again as one recording in one format"
        ) from exc
    except ReaderReadError as exc:
        raise TruncatedAudioError(
            f"decoding failed after {total / rate:.2f} s ({exc}): the file is damaged or cut short"
        ) from exc
    if resampler is not None:
        parts.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    mono = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return mono, total, (low, high)


def _check_levels(block: np.ndarray, start: int, rate: int, limits: AudioLimits) -> tuple[float, float]:
    """The block's lowest and highest sample, after refusing NaN, infinities and absurd levels."""
    low, high = float(block.min()), float(block.max())
    if math.isfinite(low) and math.isfinite(high) and max(-low, high) <= limits.max_level:
        return low, high  # the common case: one pass for min, one for max, nothing else
    finite = np.isfinite(block)
    if not finite.all():
        first = start + int(np.argmin(finite.all(axis=1)))
        raise NonFiniteError(
            f"sample {first} (at {first / rate:.3f} s) is NaN or infinite: the file was written by a "
            "broken float pipeline; re-export it as 16-bit PCM"
        )
    loud = np.abs(block).max(axis=1) > limits.max_level
    first = start + int(np.argmax(loud))
    peak = max(-low, high)
    raise LevelOutOfRangeError(
        f"sample {first} (at {first / rate:.3f} s) is {peak:.3g} where full scale is 1.0 (at most "
        f"{limits.max_level:g} is accepted): the file was written with a broken gain; re-export it "
        "normalised, or as 16-bit PCM"
    )


def _check_decoded(
    decoded: int, low: float, high: float, info: AudioInfo, exact: bool, limits: AudioLimits
) -> None:
    rate = info.native_rate
    tolerance = EXACT_TOLERANCE if exact else ESTIMATE_TOLERANCE
    if info.frames is not None and info.frames - decoded > tolerance * info.frames:
        raise TruncatedAudioError(
            f"the header declares {_seconds(info)} but only {decoded / rate:.2f} s could be decoded: "
            "the file was cut short; send the complete file"
        )
    if decoded == 0:
        raise TooShortError("the file holds no audio samples: send a recording, not an empty container")
    if decoded / rate < limits.min_seconds:
        raise TooShortError(
            f"the recording lasts {decoded / rate:.2f} s; at least {limits.min_seconds:g} s is needed: "
            "record for longer"
        )
    if limits.reject_silence and low == high:
        raise DigitalSilenceError(
            f"every sample equals {low:g}: the recording is digital silence (microphone muted or unplugged, "
            "or the recording never started); record again"
        )


def _human_bytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size:,} bytes"


def _seconds(info: AudioInfo) -> str:
    return "no length" if info.duration_s is None else f"{info.duration_s:.2f} s"
