"""Typed audio errors, one class per way an input can be refused.

Each class carries a stable ``code`` (the service maps it to an HTTP status in ``service/api/errors.py``,
the CLI prints it) and a message that tells the user what to do about it. The decoder lets no other
exception escape: library errors are caught where they happen and re-raised as one of these.
"""

from __future__ import annotations

from typing import ClassVar


class AudioError(Exception):
    """Base class: the input cannot be used as a recording; ``code`` says why, the message says what to do."""

    code: ClassVar[str] = "audio_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FileNotFoundAudioError(AudioError):
    """A path was given that is not a readable file (CLI and training only: the service passes bytes)."""

    code = "not_found"


class EmptyInputError(AudioError):
    code = "empty_input"


class TooLargeError(AudioError):
    code = "too_large"


class NotAudioError(AudioError):
    code = "not_audio"


class TruncatedAudioError(AudioError):
    code = "truncated"


class UnsupportedCodecError(AudioError):
    code = "unsupported_codec"


class TooManyChannelsError(AudioError):
    code = "too_many_channels"


class RateOutOfRangeError(AudioError):
    code = "rate_out_of_range"


class TooShortError(AudioError):
    code = "too_short"


class TooLongError(AudioError):
    code = "too_long"


class TooManySamplesError(AudioError):
    """More samples (frames x channels) than one decode may cost, declared or found while decoding."""

    code = "too_many_samples"


class NonFiniteError(AudioError):
    code = "non_finite"


class LevelOutOfRangeError(AudioError):
    """Finite samples far beyond full scale (a float file written with a huge gain): refused rather than
    passed to an encoder whose arithmetic would overflow or whose output would be meaningless."""

    code = "level_out_of_range"


class FormatChangesError(AudioError):
    """The stream changes its sample rate or channel count part way through."""

    code = "format_changes"


class DigitalSilenceError(AudioError):
    code = "digital_silence"


ALL_ERRORS: tuple[type[AudioError], ...] = (
    FileNotFoundAudioError,
    EmptyInputError,
    TooLargeError,
    NotAudioError,
    TruncatedAudioError,
    UnsupportedCodecError,
    TooManyChannelsError,
    RateOutOfRangeError,
    TooShortError,
    TooLongError,
    TooManySamplesError,
    NonFiniteError,
    LevelOutOfRangeError,
    FormatChangesError,
    DigitalSilenceError,
)
