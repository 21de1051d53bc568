"""The one audio path: decode, validate and resample (used by the service, the CLI and training).

``decode_audio(source, target_rate, limits)`` takes bytes or a path and returns :class:`DecodedAudio`: mono
float32 at ``target_rate``. WAV, FLAC, OGG (Vorbis, Opus) and MP3 are read with libsndfile; M4A/AAC and
what libsndfile cannot open with FFmpeg (PyAV). Every refusal is an :class:`AudioError` subclass with a
stable ``code`` and a message a user can act on; no other exception escapes for any input bytes.
``probe_audio(source)`` reads the header only.
"""

from acula.service.audio.decode import AudioSource, decode_audio, probe_audio
from acula.service.audio.errors import (
    ALL_ERRORS,
    AudioError,
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
from acula.service.audio.schema import AudioInfo, AudioLimits, DecodedAudio

__all__ = [
    "ALL_ERRORS",
    "AudioError",
    "AudioInfo",
    "AudioLimits",
    "AudioSource",
    "DecodedAudio",
    "DigitalSilenceError",
    "EmptyInputError",
    "FileNotFoundAudioError",
    "FormatChangesError",
    "LevelOutOfRangeError",
    "NonFiniteError",
    "NotAudioError",
    "RateOutOfRangeError",
    "TooLargeError",
    "TooLongError",
    "TooManyChannelsError",
    "TooManySamplesError",
    "TooShortError",
    "TruncatedAudioError",
    "UnsupportedCodecError",
    "decode_audio",
    "probe_audio",
]
