"""Training audio: decode once into a cache, then serve random fixed-length crops.

Decoding FLAC and resampling 2-8 kHz recordings to the model rate costs far more than reading a ``.npy``,
and every epoch needs the same samples, so :class:`AudioCache` writes each recording once as float32 at the
model rate and later reads it memory-mapped. The cache key covers the file's path, size and mtime and the
rate, so an edited file or a new model rate gets a new entry.

Crops are the training-time half of the one windowing policy: a crop is one window of
``window_seconds``, zero-padded when the recording is shorter, exactly what ``cut_windows`` gives the
encoder at inference.

When the front-end is frozen and its normalisation does not depend on the crop (the pretrained MobileNet's
fixed affine one), :class:`LogMelCache` goes one step further and stores each recording's log-mel: an epoch
then costs only the network, not the STFT (a 1,024-point DFT every 10 ms at 32 kHz costs about as much as
the small encoder itself). A log-mel crop differs from the log-mel of the cropped waveform only in the two
frames at its edges (the STFT's centring padding).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from acula.training.data.records import Recording
from acula.training.nets.frontend import LogMelFrontend


def default_cache_dir() -> Path:
    return Path(os.environ.get("ACULA_CACHE", Path.home() / ".cache" / "acula"))


# Part of every cache key: decoding through another path would have to rebuild the cache.
DECODER = "acula.service.audio"


def decode(path: Path, rate: int) -> np.ndarray:
    """Mono float32 samples at ``rate`` through the project's one audio path (``acula.service.audio``)."""
    from acula.service.audio import decode_audio

    return np.asarray(decode_audio(Path(path), target_rate=rate).samples, dtype=np.float32)


class AudioCache:
    """``<root>/audio-<rate>/<dataset>/<key>.npy``: float32 at ``rate``, decoded once.

    The key hashes the resolved file path, size, mtime, the rate and the decoder, not the recording id, so
    every adapter and the export reuse one entry per file.
    """

    def __init__(self, root: Path | None, rate: int) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.rate = rate
        self.dir = self.root / f"audio-{rate}"

    def path_for(self, rec: Recording) -> Path:
        if rec.audio_path is None:
            raise ValueError(f"{rec.dataset}/{rec.recording_id} has no audio")
        path = Path(rec.audio_path).resolve()
        stat = path.stat()
        key = hashlib.sha256(
            f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{self.rate}|{DECODER}".encode()
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
        return prepare(self, records, "caching audio", progress)


def prepare(
    cache: AudioCache | LogMelCache, records: list[Recording], what: str, progress: bool
) -> list[Recording]:
    """Fill ``cache`` for every record now; returns the records it could hold (non-empty)."""
    from tqdm import tqdm

    usable = []
    for rec in tqdm(records, desc=what, disable=not progress, leave=False):
        try:
            if cache.load(rec).shape[-1] > 0:
                usable.append(rec)
        except Exception as exc:  # an unreadable file drops one recording, not the run
            print(f"skipping {rec.dataset}/{rec.recording_id}: cannot decode {rec.audio_path}: {exc}")
    return usable


class LogMelCache:
    """``<root>/logmel-<front-end hash>/<dataset>/<key>.npy``: each recording's whole log-mel ``(F, T)``,
    float16 (its rounding, ~1e-3 of a unit-scale value, is far below the variation between crops).

    Only for a front-end whose output at a frame does not depend on the crop; a per-clip normalised one
    (the CNN's) trains from waveform crops instead.
    """

    def __init__(self, audio: AudioCache, frontend: LogMelFrontend) -> None:
        config = frontend.config
        if config.normalise == "clip":
            raise ValueError("a per-clip normalised front-end depends on the crop: train from waveforms")
        if audio.rate != config.sample_rate:
            raise ValueError(f"audio cache at {audio.rate} Hz, front-end at {config.sample_rate} Hz")
        self.audio = audio
        self.frontend = frontend.eval()
        digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
        self.dir = audio.root / f"logmel-{digest}"
        with torch.no_grad():  # the log-mel of silence, per band: what a crop past the end is padded with
            silence = self.frontend(torch.zeros(1, 4 * config.n_fft))  # (1, 1, F, T)
        self.pad_value = silence[0, 0, :, :1].numpy().astype(np.float32)  # (F, 1)

    def frames(self, samples: int) -> int:
        """Log-mel frames of a window of ``samples`` samples (what the encoder sees at inference)."""
        return int(self.frontend.num_frames(samples))

    def path_for(self, rec: Recording) -> Path:
        return self.dir / rec.dataset / self.audio.path_for(rec).name

    def load(self, rec: Recording) -> np.ndarray:
        path = self.path_for(rec)
        if not path.is_file():
            samples = np.asarray(self.audio.load(rec), dtype=np.float32)
            with torch.no_grad():
                logmel = self.frontend(torch.from_numpy(samples.copy())[None], fft=True)[
                    0, 0
                ]  # (S,) -> (F, T)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, logmel.numpy().astype(np.float16))
            tmp.replace(path)
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def prepare(self, records: list[Recording], progress: bool = True) -> list[Recording]:
        return prepare(self, records, "caching log-mels", progress)


def random_crop(
    samples: np.ndarray, length: int, rng: np.random.Generator, pad_value: float | np.ndarray = 0.0
) -> np.ndarray:
    """One window of ``length`` along the last axis at a random offset; shorter input is padded at the end
    with ``pad_value`` (zeros for a waveform, the log-mel of silence for a log-mel)."""
    n = samples.shape[-1]
    out = np.empty((*samples.shape[:-1], length), dtype=np.float32)
    out[...] = pad_value
    if n <= length:
        out[..., :n] = samples
        return out
    start = int(rng.integers(0, n - length + 1))
    out[...] = samples[..., start : start + length]
    return out


class CropDataset(Dataset):
    """Item ``i`` -> ``(crop, i % len(records))``: a random window of record ``i``, a waveform ``(S,)`` from
    an :class:`AudioCache` or a log-mel ``(1, F, T)`` from a :class:`LogMelCache` (``window`` samples).

    Crops are reproducible: the offset is drawn from ``(seed, epoch, i)``, so a resumed run sees the same
    data, and ``set_epoch`` gives every epoch new offsets.
    """

    def __init__(
        self,
        records: list[Recording],
        cache: AudioCache | LogMelCache,
        window_samples: int,
        crops: int = 1,
        seed: int = 0,
    ) -> None:
        if not records:
            raise ValueError("no training-side recordings to train on: check data.root and data.datasets")
        self.records = records
        self.cache = cache
        self.window, self.pad_value, self.channel_axis = window_samples, 0.0, False
        if isinstance(cache, LogMelCache):  # log-mel crops: frames, padded with silence, (F, T) -> (1, F, T)
            self.window, self.pad_value, self.channel_axis = (
                cache.frames(window_samples),
                cache.pad_value,
                True,
            )
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
        crop = random_crop(self.cache.load(self.records[rec_index]), self.window, rng, self.pad_value)
        return torch.from_numpy(crop[None] if self.channel_axis else crop), rec_index
