"""Helpers every dataset adapter shares: finding audio in either format, reading headers, skip reasons.

Adapters read a user's copy of an official release as well as the shared FLAC copy, so audio is looked up by
stem with any of :data:`AUDIO_SUFFIXES`, and whatever cannot be used is returned as a :class:`Skipped` entry
(never silently dropped) so the CLI can tell the user what was left out and why.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from acula.training.data.records import Recording

log = logging.getLogger("acula.data")

AUDIO_SUFFIXES = (".flac", ".wav")
Sex = Literal["male", "female"]


@dataclass(frozen=True)
class Skipped:
    """One item an adapter could not turn into a record: which, and a reason a user can act on."""

    dataset: str
    item: str
    reason: str


@dataclass
class AdapterResult:
    """What one adapter read: records (split not yet assigned for grouped datasets) and what it skipped."""

    records: list[Recording] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def skip(self, dataset: str, item: str, reason: str) -> None:
        log.debug("%s: skipped %s: %s", dataset, item, reason)
        self.skipped.append(Skipped(dataset, item, reason))


def index_audio(folder: Path) -> dict[str, Path]:
    """Every audio file under ``folder`` (recursively) by stem; FLAC wins over WAV when both exist."""
    found: dict[str, Path] = {}
    for suffix in reversed(AUDIO_SUFFIXES):  # later suffixes overwrite: .flac last, so it wins
        for path in sorted(folder.rglob(f"*{suffix}")):
            found[path.stem] = path.resolve()
    return found


def audio_header(path: Path) -> tuple[int, float]:
    """(sample rate, duration in seconds) from the file header only: fast even for thousands of files."""
    import soundfile

    info = soundfile.info(str(path))
    return int(info.samplerate), float(info.frames) / float(info.samplerate)


def read_header_or_skip(result: AdapterResult, dataset: str, path: Path) -> tuple[int, float] | None:
    """The header, or None after recording why the file is unusable (corrupt, empty, not audio)."""
    if path.stat().st_size == 0:
        result.skip(dataset, str(path), "empty audio file (0 bytes)")
        return None
    try:
        rate, duration = audio_header(path)
    except Exception as error:  # soundfile raises RuntimeError/LibsndfileError for unreadable files
        result.skip(dataset, str(path), f"unreadable audio: {error}")
        return None
    if duration <= 0:
        result.skip(dataset, str(path), "empty audio file (0 frames)")
        return None
    return rate, duration


def is_silent(path: Path, block_frames: int = 65536) -> bool:
    """True when every sample of the file is zero. Reads the audio (not just the header), so adapters call
    it only where a release is known to hold such files (Coswara: recordings whose capture failed)."""
    import numpy as np
    import soundfile

    for block in soundfile.blocks(str(path), blocksize=block_frames, dtype="float32"):
        if np.any(block):
            return False
    return True


def require_dir(root: Path, dataset: str, expected: Iterable[str]) -> None:
    """Raise with the expected layout when ``root`` is not a folder of this release."""
    if not root.is_dir():
        wanted = ", ".join(expected)
        raise FileNotFoundError(
            f"{dataset}: folder {root} not found (expected a release containing {wanted})"
        )


def stable_fraction(salt: str, key: str) -> float:
    """A deterministic number in [0, 1) from ``key``: the same on every machine and Python version."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def parse_sex(value: str | None) -> Sex | None:
    """'M'/'F'/'male'/'female'/'0'/'1' (SPRSound: 0 male, 1 female) -> 'male'/'female'; else None."""
    text = (value or "").strip().lower()
    if text in ("m", "male", "0", "man", "boy"):
        return "male"
    if text in ("f", "female", "1", "woman", "girl"):
        return "female"
    return None


def parse_float(value: str | None) -> float | None:
    """A number, or None for NA/nan/empty (the releases write missing values all three ways)."""
    text = (value or "").strip()
    if text.lower() in ("", "na", "nan", "none", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        return None
