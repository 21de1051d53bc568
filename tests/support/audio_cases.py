"""Audio files for tests, generated in memory: well-formed files in every supported format, and damaged ones.

Nothing binary is committed: every case is built from a sine with soundfile or PyAV, then edited byte by
byte where a case needs a lying or damaged header.
"""

from __future__ import annotations

import io
import struct

import numpy as np

# (test id, soundfile container, subtype, sample rate): every encoding decode_audio must read.
SOUNDFILE_FORMATS = [
    ("wav-pcm_u8", "WAV", "PCM_U8", 8000),
    ("wav-pcm_16", "WAV", "PCM_16", 4000),
    ("wav-pcm_24", "WAV", "PCM_24", 22050),
    ("wav-pcm_32", "WAV", "PCM_32", 44100),
    ("wav-float", "WAV", "FLOAT", 16000),
    ("wav-double", "WAV", "DOUBLE", 2000),
    ("flac-16", "FLAC", "PCM_16", 8000),
    ("flac-24", "FLAC", "PCM_24", 48000),
    ("ogg-vorbis", "OGG", "VORBIS", 16000),
    ("ogg-opus", "OGG", "OPUS", 48000),
    ("mp3", "MP3", "MPEG_LAYER_III", 16000),
]


def sine(freq: float = 440.0, seconds: float = 2.0, rate: int = 16000, channels: int = 1) -> np.ndarray:
    """A 0.5-amplitude sine, ``(frames,)`` or ``(frames, channels)`` float32 (every channel the same)."""
    t = np.arange(round(seconds * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return tone if channels == 1 else np.repeat(tone[:, None], channels, axis=1)


def encode(samples: np.ndarray, rate: int, container: str = "WAV", subtype: str = "PCM_16") -> bytes:
    """``samples`` written by libsndfile into an in-memory file."""
    buffer = io.BytesIO()
    import soundfile as sf

    sf.write(buffer, samples, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def encode_av(samples: np.ndarray, rate: int, codec: str = "aac", container: str = "mp4") -> bytes:
    """``samples`` (``(frames,)`` or ``(frames, 2)``) encoded by FFmpeg through PyAV, e.g. AAC in M4A."""
    import av

    layout = "mono" if samples.ndim == 1 else "stereo"
    planar = np.ascontiguousarray(np.atleast_2d(samples.T), dtype=np.float32)  # (channels, frames)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def encode_m4a(samples: np.ndarray, rate: int) -> bytes:
    """AAC in an MP4 (M4A) container."""
    return encode_av(samples, rate, "aac", "mp4")


def encode_video_only_mp4() -> bytes:
    """A few black MPEG-4 video frames and no audio stream."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def wav_chunk_offset(data: bytes, chunk: bytes) -> int:
    """Byte offset of a RIFF chunk's id (``b"fmt "`` or ``b"data"``)."""
    offset = data.find(chunk, 12)
    assert offset > 0, f"no {chunk!r} chunk"
    return offset


def with_wav_format_tag(data: bytes, tag: int) -> bytes:
    """The WAV with its ``fmt `` chunk's format tag replaced (0x1234 is no codec anyone decodes)."""
    edited = bytearray(data)
    struct.pack_into("<H", edited, wav_chunk_offset(data, b"fmt ") + 8, tag)
    return bytes(edited)


def wav_claiming_seconds(data: bytes, seconds: float) -> bytes:
    """The WAV with its ``data`` chunk size claiming ``seconds`` of audio (the samples stay as they are)."""
    rate, block_align = struct.unpack_from("<I", data, 24)[0], struct.unpack_from("<H", data, 32)[0]
    edited = bytearray(data)
    struct.pack_into("<I", edited, wav_chunk_offset(data, b"data") + 4, round(seconds * rate) * block_align)
    return bytes(edited)


def flac_claiming_frames(data: bytes, frames: int) -> bytes:
    """The FLAC with STREAMINFO's 36-bit total-samples field set to ``frames`` (0 means "unknown")."""
    assert data[:4] == b"fLaC"
    edited = bytearray(data)
    packed = int.from_bytes(edited[18:26], "big")  # rate(20) channels(3) bits(5) total(36)
    packed = (packed & ~((1 << 36) - 1)) | frames
    edited[18:26] = packed.to_bytes(8, "big")
    return bytes(edited)


def cut(data: bytes, fraction: float = 0.5) -> bytes:
    """The first ``fraction`` of the bytes: an interrupted upload."""
    return data[: int(len(data) * fraction)]


def random_bytes(size: int = 4096, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """Frequency of the FFT magnitude peak, with parabolic interpolation between bins."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak = int(np.argmax(spectrum[1:-1])) + 1
    left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
    shift = 0.5 * (left - right) / (left - 2 * centre + right)
    return (peak + shift) * rate / len(samples)


# --- hostile inputs (docs/RELIABILITY.md) -------------------------------------------------------------------
# Float containers libsndfile writes; each can hold any finite float32, so any level.
FLOAT_CONTAINERS = ["WAV", "AIFF", "CAF", "W64", "RF64"]


def scaled_float(container: str, peak: float, seconds: float = 2.0, rate: int = 8000) -> bytes:
    """A tone scaled to ``peak`` (finite, however large) as 32-bit float in ``container``."""
    tone = sine(220.0, seconds, rate) / 0.5 * peak
    return encode(tone.astype(np.float32), rate, container, "FLOAT")


def mp3_joined(*parts: tuple[int, float]) -> bytes:
    """MP3 files of ``(rate, seconds)`` each, joined byte for byte: a stream whose sample rate changes."""
    return b"".join(
        encode(sine(220.0, seconds, rate), rate, "MP3", "MPEG_LAYER_III") for rate, seconds in parts
    )


def mp3_without_xing(seconds: float, rate: int = 16000) -> bytes:
    """An MP3 whose first frame (the Xing/Info frame LAME writes, which states the length) is removed."""
    data = encode(sine(220.0, seconds, rate), rate, "MP3", "MPEG_LAYER_III")
    second = data.find(data[:2], 4)  # the next frame's sync and header bytes
    return data[second:]


def wav_with_block_align(data: bytes, block_align: int) -> bytes:
    """The WAV with its ``fmt `` chunk's block_align replaced (writers leave it 0 or wrong)."""
    edited = bytearray(data)
    struct.pack_into("<H", edited, wav_chunk_offset(data, b"fmt ") + 20, block_align)
    return bytes(edited)


# Text files FFmpeg demuxers read as lists of other files to open: uploads that must never make the decoder
# open anything. ``{name}`` is a relative file name (absolute ones the concat demuxer refuses by itself).
REFERENCING_FILES = {
    "ffconcat": "ffconcat version 1.0\nfile '{name}'\n",
    "hls": "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{name}\n#EXT-X-ENDLIST\n",
    "m3u": "#EXTM3U\n#EXTINF:10,x\n{name}\n",
    "dash": '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">'
    '<Period><AdaptationSet mimeType="audio/mp4"><Representation id="1" bandwidth="1">'
    "<BaseURL>{name}</BaseURL></Representation></AdaptationSet></Period></MPD>\n",
    "sdp": "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 9 RTP/AVP 0\n",
    "ffmetadata": ";FFMETADATA1\ntitle={name}\n",
}
