"""Seed files cut from real recordings, and the mutations a hostile or broken client can send.

Seeds are real auscultation audio from the shared data (a PhysioNet heart sound, an SPRSound lung sound and a
Coswara cough), cut to about a second and re-encoded to WAV, FLAC, OGG Vorbis and MP3, so mutations start from
what real encoders write. Structural mutations edit the header fields a decoder trusts (channels, rate,
declared length, block alignment); byte mutations flip bits and cut the file anywhere.
"""

from __future__ import annotations

import io
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

# Inputs generated in this session, by test family; conftest.py prints the total (the issue asks >= 10,000).
GENERATED: Counter[str] = Counter()
# (dataset file pattern under the shared data, rate to write the seed at)
REAL_SOURCES = [
    ("physionet2016/training-a/a0001.flac", 2000),
    ("sprsound/train_wav/*.flac", 8000),
    ("coswara/20200413/*/cough-heavy.flac", 16000),
]
# container, subtype; libsndfile's Vorbis and MP3 encoders need 8 kHz or more, so those use the 8/16 kHz seeds
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "wav-float": ("WAV", "FLOAT"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def encode(samples: np.ndarray, rate: int, container: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def real_clips(data_root: Path, seconds: float = 1.0) -> list[tuple[np.ndarray, int]]:
    """About ``seconds`` of audio from each real source that is present and readable."""
    clips = []
    for pattern, rate in REAL_SOURCES:
        for path in sorted(data_root.glob(pattern))[:20]:
            try:
                samples, native = sf.read(str(path), dtype="float32", frames=int(seconds * 16000))
            except (RuntimeError, sf.LibsndfileError):
                continue
            if native == rate and len(samples) >= int(seconds * rate) and np.ptp(samples) > 0:
                clips.append((samples[: int(seconds * rate)], rate))
                break
    return clips


def seed_files(data_root: Path) -> dict[str, bytes]:
    """``{"<format>-<rate>": bytes}``: every real clip in every format its rate allows."""
    seeds = {}
    for samples, rate in real_clips(data_root):
        for name, (container, subtype) in FORMATS.items():
            if container in ("OGG", "MP3") and rate < 8000:
                continue
            seeds[f"{name}-{rate}"] = encode(samples, rate, container, subtype)
    return seeds


# --- structural mutations --------------------------------------------------------------------------------
def wav_field(data: bytes, field: str, value: int) -> bytes:
    """A canonical-header WAV with one ``fmt ``/``data`` field set to ``value`` (masked to its width)."""
    offsets = {
        "channels": (22, "<H"),
        "rate": (24, "<I"),
        "byte_rate": (28, "<I"),
        "block_align": (32, "<H"),
        "bits": (34, "<H"),
        "riff_size": (4, "<I"),
    }
    edited = bytearray(data)
    if field == "data_size":
        position = data.find(b"data", 12)
        if position < 0:
            return data
        struct.pack_into("<I", edited, position + 4, value & 0xFFFFFFFF)
        return bytes(edited)
    offset, fmt = offsets[field]
    if offset + struct.calcsize(fmt) <= len(edited):
        struct.pack_into(fmt, edited, offset, value & (0xFFFF if fmt == "<H" else 0xFFFFFFFF))
    return bytes(edited)


WAV_FIELDS = ["channels", "rate", "byte_rate", "block_align", "bits", "riff_size", "data_size"]


def flac_streaminfo(
    data: bytes, rate: int | None = None, channels: int | None = None, total: int | None = None
) -> bytes:
    """The FLAC with STREAMINFO's rate (20 bits), channels-1 (3 bits) or total samples (36 bits) replaced."""
    if data[:4] != b"fLaC" or len(data) < 26:
        return data
    packed = int.from_bytes(data[18:26], "big")  # rate(20) channels-1(3) bits-1(5) total(36)
    if rate is not None:
        packed = (packed & ~(((1 << 20) - 1) << 44)) | ((rate & 0xFFFFF) << 44)
    if channels is not None:
        packed = (packed & ~(0b111 << 41)) | (((channels - 1) & 0b111) << 41)
    if total is not None:
        packed = (packed & ~((1 << 36) - 1)) | (total & ((1 << 36) - 1))
    edited = bytearray(data)
    edited[18:26] = packed.to_bytes(8, "big")
    return bytes(edited)


def flip_bits(data: bytes, positions: list[float], bits: list[int]) -> bytes:
    """Flip bit ``bits[i]`` of the byte at relative position ``positions[i]``."""
    edited = bytearray(data)
    for position, bit in zip(positions, bits, strict=False):
        index = min(len(edited) - 1, int(position * len(edited)))
        edited[index] ^= 1 << (bit % 8)
    return bytes(edited)


def nan_wav(
    rate: int = 8000, seconds: float = 0.5, share: float = 0.01, value: float = float("nan")
) -> bytes:
    """A 32-bit float WAV of a tone with ``share`` of its samples replaced by ``value`` (NaN or Inf)."""
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    count = max(1, int(share * len(samples)))
    samples[np.linspace(0, len(samples) - 1, count).astype(int)] = value
    return encode(samples, rate, "WAV", "FLOAT")


def silence_flac(seconds: float, rate: int = 8000, total: int | None = None) -> bytes:
    """Hours of digital silence as FLAC: a few hundred KB that expand to ``seconds * rate`` samples (a
    decompression bomb). Written in blocks so the generator itself stays small; ``total`` rewrites the
    declared length (0 = unknown, which forces decoding to find the real length)."""
    buffer = io.BytesIO()
    block = np.zeros(rate * 10, dtype=np.int16)
    with sf.SoundFile(buffer, "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as out:
        for _ in range(int(seconds // 10)):
            out.write(block)
    data = buffer.getvalue()
    return flac_streaminfo(data, total=total) if total is not None else data


def rate_bomb(declared: bool) -> bytes:
    """The sample-rate bomb of issue 20: a FLAC at 384 kHz. ``declared``: 10 s of audio whose header claims
    599 s (230 M samples), refused from the header; otherwise 180 s with the length unset, so only the
    decode itself can find out how many samples it holds (69 M, past the 57.6 M budget)."""
    if declared:
        return flac_streaminfo(silence_flac(10, rate=384000), total=599 * 384000)
    return silence_flac(180, rate=384000, total=0)
