"""Training audio: decode once into a cache, then serve random fixed-length crops.

Decoding FLAC and resampling 2-8 kHz recordings to the model rate costs far more than reading a ``.npy``,
and every epoch needs the same samples, so :class:`AudioCache` writes each recording once as float32 at the
model rate and later reads it memory-mapped. The cache key covers the file's path, size and mtime and the
rate, so an edited file or a new model rate gets a new entry.

Crops are the training-time half of the one windowing policy: a crop is one window of
``window_seconds``, zero-padded when the recording is shorter, exactly what ``cut_windows`` gives the
encoder at inference.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from acula.training.data.records import Recording


def default_cache_dir() -> Path:
    return Path(os.environ.get("ACULA_CACHE", Path.home() / ".cache" / "acula"))


def decoder_name() -> str:
    """Which decoder ``decode`` uses; part of the cache key, so switching decoders rebuilds the cache."""
    try:
        import acula.service.audio  # noqa: F401
    except ImportError:
        return "soundfile-soxr"
    return "service.audio"


def decode(path: Path, rate: int) -> np.ndarray:
    """Mono float32 samples at ``rate`` through the project's one audio path (``service.audio``)."""
    if decoder_name() == "soundfile-soxr":  # the service audio module is not installed: the same, inline
        return _decode_fallback(path, rate)
    from acula.service.audio import decode_audio

    return np.asarray(decode_audio(Path(path), target_rate=rate).samples, dtype=np.float32)


def _decode_fallback(path: Path, rate: int) -> np.ndarray:
    import soundfile as sf
    import soxr

    samples, native = sf.read(str(path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if native != rate:
        mono = soxr.resample(mono, native, rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


class AudioCache:
    """``<root>/audio-<rate>/<dataset>/<key>.npy``: float32 at ``rate``, decoded once.

    The key hashes the resolved file path, size, mtime, the rate and the decoder, not the recording id, so
    every adapter and the export reuse one entry per file.
    """

    def __init__(self, root: Path | None, rate: int) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.rate = rate
        self.dir = self.root / f"audio-{rate}"
        self.decoder = decoder_name()

    def path_for(self, rec: Recording) -> Path:
        if rec.audio_path is None:
            raise ValueError(f"{rec.dataset}/{rec.recording_id} has no audio")
        path = Path(rec.audio_path).resolve()
        stat = path.stat()
        key = hashlib.sha256(
            f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{self.rate}|{self.decoder}".encode()
        ).hexdigest()
        return self.dir / rec.dataset / f"{key[:24]}.npy"

    def load(self, rec: Recording) -> np.ndarray:
        """The recording's samples (memory-mapped from the cache; decoded and written on first use)."""
        path = self.path_for(rec)
        if not path.is_file():
            samples = decode(Path(rec.audio_path), self.rate)  # type: ignore[arg-type]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, samples)
            tmp.replace(path)
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def prepare(self, records: list[Recording], progress: bool = True) -> list[Recording]:
        """Decode every record into the cache now; returns the records whose audio could be decoded."""
        from tqdm import tqdm

        usable = []
        for rec in tqdm(records, desc="caching audio", disable=not progress, leave=False):
            try:
                if len(self.load(rec)) > 0:
                    usable.append(rec)
            except Exception as exc:  # an unreadable file drops one recording, not the run
                print(f"skipping {rec.dataset}/{rec.recording_id}: cannot decode {rec.audio_path}: {exc}")
        return usable


def random_crop(samples: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """One window of ``length`` samples at a random offset; shorter audio is zero-padded at the end."""
    out = np.zeros(length, dtype=np.float32)
    if len(samples) <= length:
        out[: len(samples)] = samples
        return out
    start = int(rng.integers(0, len(samples) - length + 1))
    out[:] = samples[start : start + length]
    return out


class CropDataset(Dataset):
    """Item ``i`` -> ``(crop (S,) float32, i % len(records))``: a random window of record ``i``.

    Crops are reproducible: the offset is drawn from ``(seed, epoch, i)``, so a resumed run sees the same
    data, and ``set_epoch`` gives every epoch new offsets.
    """

    def __init__(
        self, records: list[Recording], cache: AudioCache, window_samples: int, crops: int = 1, seed: int = 0
    ) -> None:
        if not records:
            raise ValueError("no training-side recordings to train on: check data.root and data.datasets")
        self.records = records
        self.cache = cache
        self.window = window_samples
        self.crops = crops
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records) * self.crops

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rec_index = index % len(self.records)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        crop = random_crop(self.cache.load(self.records[rec_index]), self.window, rng)
        return torch.from_numpy(crop), rec_index
