"""Recognise a container from its first bytes, and read what a WAV header declares.

The magic number decides how a decoder failure is reported: bytes that look like no audio container are
"not audio", while a recognised container that cannot be decoded is a truncated file or an unsupported
codec. WAV headers are parsed here because libsndfile silently shortens a WAV whose ``data`` chunk claims
more bytes than the file holds: the claim is what tells a truncated upload (or a header lying about its
length) apart from a short recording.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

# Names of common WAVE format tags, for messages (WAVE_FORMAT_EXTENSIBLE is resolved to its sub-format).
WAV_CODEC_NAMES = {
    0x0001: "PCM",
    0x0002: "MS ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0055: "MPEG Layer III",
}
_EXTENSIBLE = 0xFFFE
_PCM_TAGS = {0x0001, 0x0003}  # integer PCM, IEEE float
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming writers leave the data size unset
_MAX_CHUNKS = 4096


def sniff_container(head: bytes) -> str | None:
    """The container named by the magic bytes at the start of a file, or ``None``."""
    if head[:4] == b"RIFF" and (len(head) < 12 or head[8:12] == b"WAVE"):
        return "WAV"  # a RIFF cut before its form type is still a (truncated) WAV
    if head[:4] in (b"RF64", b"BW64"):
        return "RF64"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:4] == b"FORM":
        return "AIFF"
    if head[:4] == b"caff":
        return "CAF"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "MATROSKA"
    if head[4:8] == b"ftyp":
        return "MP4"
    if head[:3] == b"ID3":
        return "MP3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0x3
        return "MP3" if layer != 0 else "AAC"  # ADTS frames carry layer 0
    return None


@dataclass(frozen=True)
class WavHeader:
    """The ``fmt `` and ``data`` chunks of a RIFF/WAVE file."""

    format_tag: int
    channels: int
    rate: int
    block_align: int
    bits: int
    data_offset: int
    declared_bytes: int | None  # None when the writer left the size unset

    @property
    def codec_name(self) -> str:
        return WAV_CODEC_NAMES.get(self.format_tag, f"format tag 0x{self.format_tag:04X}")

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame. For PCM and float the one libsndfile decodes with, channels x whole bytes per
        sample, whatever ``block_align`` says (writers leave it 0 or wrong, and libsndfile ignores it);
        for block codecs (ADPCM...) the block size."""
        if self.format_tag in _PCM_TAGS and self.channels and self.bits:
            return self.channels * -(-self.bits // 8)
        return max(self.block_align, 1)

    def declared_frames(self, file_size: int) -> int:
        """Frames the header claims; the bytes present when the claim is unset."""
        data = self.declared_bytes if self.declared_bytes is not None else file_size - self.data_offset
        return max(data, 0) // self.frame_bytes

    def available_frames(self, file_size: int) -> int:
        """Whole frames actually present in the file."""
        return max(file_size - self.data_offset, 0) // self.frame_bytes


class WavHeaderError(ValueError):
    """The RIFF structure is cut short or malformed before the ``data`` chunk."""


def read_wav_header(handle: BinaryIO) -> WavHeader:
    """Walk the RIFF chunks up to ``data``; the handle is left at an unspecified position."""
    handle.seek(0)
    riff = handle.read(12)
    if len(riff) < 12 or riff[8:12] != b"WAVE":
        raise WavHeaderError("the RIFF header is shorter than 12 bytes or is not WAVE")
    fmt: tuple[int, int, int, int, int] | None = None
    for _ in range(_MAX_CHUNKS):
        chunk = handle.read(8)
        if len(chunk) < 8:
            break
        chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        start = handle.tell()
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(handle.read(size))
        elif chunk_id == b"data":
            if fmt is None:
                raise WavHeaderError("the data chunk comes before any fmt chunk")
            tag, channels, rate, block_align, bits = fmt
            declared = None if size in _UNKNOWN_SIZES else size
            return WavHeader(tag, channels, rate, block_align, bits, start, declared)
        handle.seek(start + size + (size & 1))  # chunks are padded to an even length
    raise WavHeaderError("no data chunk before the end of the file" if fmt else "no fmt chunk found")


def _parse_fmt(body: bytes) -> tuple[int, int, int, int, int]:
    if len(body) < 16:
        raise WavHeaderError(f"the fmt chunk is {len(body)} bytes, fewer than the 16 a WAV needs")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == _EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
    return tag, channels, rate, block_align, bits
