"""Two decoders behind one small interface: libsndfile (through soundfile) first, FFmpeg (through PyAV) next.

A reader opens a seekable binary handle, describes the stream from its header (:class:`AudioInfo`) without
decoding it, then yields ``(frames, channels)`` float32 blocks on demand, so the caller can stop as soon as
a limit is crossed. Readers translate their library's exceptions into :class:`ReaderOpenError` and
:class:`ReaderReadError`; the caller turns those into user-facing :class:`~service.audio.errors.AudioError`
subclasses, because only it knows the sniffed container that decides which one applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np

from acula.service.audio.schema import AudioInfo

BLOCK_FRAMES = 1 << 16
# libsndfile reports this many frames when a FLAC header leaves the total unset.
_UNKNOWN_LENGTH = 1 << 62
# Containers PyAV may open for us; FFmpeg also "opens" images, playlists and text, which are not audio.
AV_CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": "MP4",
    "aac": "AAC",
    "matroska,webm": "MATROSKA",
    "ogg": "OGG",
    "mp3": "MP3",
    "flac": "FLAC",
    "caf": "CAF",
    "aiff": "AIFF",
}
# What FFmpeg may do with an upload, set before it probes a byte: demux only the containers above (the concat,
# HLS, image-sequence and playlist demuxers would open other files named inside the upload) and open no
# protocol at all (our bytes come through PyAV's own I/O, which needs none; "none" names no protocol).
AV_OPTIONS = {
    "format_whitelist": ",".join(name for names in AV_CONTAINERS for name in names.split(",")),
    "protocol_whitelist": "none",
}
# libsndfile's names for FFmpeg's codecs, where a format is read by either library.
_AV_SUBTYPES = {"mp3": "MPEG_LAYER_III", "mp3float": "MPEG_LAYER_III"}
# Formats whose header states the exact length; others (MP3, AAC) only estimate it.
_EXACT_LENGTH_FORMATS = {"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "AIFF", "CAF"}


OpenFailure = Literal["unrecognised", "malformed", "no_audio", "no_decoder"]


class ReaderOpenError(Exception):
    """The library could not open the stream; ``reason`` says how far it got."""

    def __init__(self, message: str, reason: OpenFailure) -> None:
        super().__init__(message)
        self.reason: OpenFailure = reason


class ReaderReadError(Exception):
    """Decoding failed part way through the stream."""


class ReaderFormatChange(ReaderReadError):
    """The stream's sample rate or channel count changes part way through; ``frame`` is where."""

    def __init__(self, message: str, frame: int) -> None:
        super().__init__(message)
        self.frame = frame


class AudioReader(Protocol):
    info: AudioInfo
    exact_length: bool

    def blocks(self) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


class SoundfileReader:
    """WAV, FLAC, OGG (Vorbis, Opus), MP3, AIFF, CAF and the other formats libsndfile knows."""

    def __init__(self, handle: BinaryIO, size_bytes: int) -> None:
        import soundfile as sf

        handle.seek(0)
        try:
            self._file = sf.SoundFile(handle)
        except sf.LibsndfileError as exc:
            # libsndfile codes: 1 unrecognised format, 3 recognised but malformed, 4 unsupported encoding.
            codes: dict[int, OpenFailure] = {1: "unrecognised", 4: "no_decoder"}
            reason = codes.get(exc.code, "malformed")
            raise ReaderOpenError(exc.error_string, reason) from exc
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            raise ReaderOpenError(str(exc), "malformed") from exc
        frames = self._file.frames
        self.exact_length = self._file.format in _EXACT_LENGTH_FORMATS
        self.info = AudioInfo(
            format=self._file.format,
            subtype=self._file.subtype,
            channels=self._file.channels,
            native_rate=self._file.samplerate,
            frames=None if frames >= _UNKNOWN_LENGTH else frames,  # None: the header does not say
            size_bytes=size_bytes,
            decoder="soundfile",
        )

    def blocks(self) -> Iterator[np.ndarray]:
        import soundfile as sf

        while True:
            try:
                block = self._file.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
                raise ReaderReadError(str(exc)) from exc
            if len(block) == 0:
                return
            yield block

    def close(self) -> None:
        self._file.close()


class AvReader:
    """MP3, M4A/AAC and what libsndfile cannot open, limited to the audio containers in ``AV_CONTAINERS``.

    MP3 comes here rather than to libsndfile, whose MP3 decoder stops at the length it estimated from the
    first frame (a third of a file without a Xing header) or at a change of sample rate, and reports a
    clean end either way: the rest of the recording would be dropped without a word.
    """

    exact_length = False

    def __init__(self, handle: BinaryIO, size_bytes: int) -> None:
        import av

        handle.seek(0)
        try:
            container: Any = av.open(handle, mode="r", options=AV_OPTIONS)
        except (av.error.FFmpegError, ValueError, OSError, EOFError, IndexError) as exc:
            raise ReaderOpenError(str(exc), "unrecognised") from exc
        self._container = container
        try:
            self.info, self._stream = self._describe(container, size_bytes)
        except BaseException:
            container.close()
            raise

    @staticmethod
    def _describe(container: Any, size_bytes: int) -> tuple[AudioInfo, Any]:
        name = container.format.name
        if name not in AV_CONTAINERS:
            raise ReaderOpenError(f"FFmpeg reads it as {name!r}, not an audio container", "unrecognised")
        if not container.streams.audio:
            raise ReaderOpenError(f"the {AV_CONTAINERS[name]} file holds no audio stream", "no_audio")
        stream = container.streams.audio[0]
        context = stream.codec_context
        if context is None or not context.sample_rate:
            raise ReaderOpenError(
                f"FFmpeg has no decoder for the audio stream in this {AV_CONTAINERS[name]}", "no_decoder"
            )
        rate = int(context.sample_rate)
        frames: int | None = None
        if stream.duration and stream.time_base:
            frames = round(float(stream.duration * stream.time_base) * rate)
        elif container.duration:
            frames = round(container.duration * rate / 1_000_000)
        info = AudioInfo(
            format=AV_CONTAINERS[name],
            subtype=_AV_SUBTYPES.get(str(context.name), str(context.name).upper()),
            channels=int(context.layout.nb_channels),
            native_rate=rate,
            frames=frames,
            size_bytes=size_bytes,
            decoder="pyav",
        )
        return info, stream

    def blocks(self) -> Iterator[np.ndarray]:
        """Blocks of about ``BLOCK_FRAMES`` (codec frames hold a few hundred samples: one array per codec
        frame would cost more in per-block checks than in decoding)."""
        import av

        # Same layout and rate, packed float32: PyAV reads planar frames of 8 channels past their last plane
        # (a segfault the fuzzer found), and packed frames are what the caller wants anyway.
        resampler = av.AudioResampler(format="flt")
        pending: list[np.ndarray] = []
        count = decoded = 0
        rate, channels = self.info.native_rate, self.info.channels
        try:
            for frame in self._container.decode(self._stream):
                if frame.sample_rate != rate or frame.layout.nb_channels != channels:
                    raise ReaderFormatChange(
                        f"at {decoded / rate:.2f} s the stream turns to {frame.sample_rate} Hz with "
                        f"{frame.layout.nb_channels} channel(s), where it was {rate} Hz with {channels}",
                        decoded,
                    )
                decoded += frame.samples
                for converted in resampler.resample(frame):
                    pending.append(converted.to_ndarray().reshape(-1, channels))
                    count += pending[-1].shape[0]
                if count >= BLOCK_FRAMES:
                    yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)
                    pending, count = [], 0
            flushed = resampler.resample(None)
            pending.extend(converted.to_ndarray().reshape(-1, channels) for converted in flushed)
        except (av.error.FFmpegError, ValueError, OSError, EOFError, IndexError) as exc:
            raise ReaderReadError(str(exc)) from exc
        if pending:
            yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)

    def close(self) -> None:
        self._container.close()
