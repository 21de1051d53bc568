"""openSMILE eGeMAPSv02 functionals: the hand-crafted baseline row of the OPERA benchmark.

88 functionals per recording (pitch, jitter, shimmer, loudness, spectral slope, MFCC 1-4 statistics...),
computed on the whole recording at its native rate (as OPERA does from the files), after the project's one
decoder (``service.audio.decode_audio``) so that ``.wav`` and ``.flac`` copies give the same numbers.
openSMILE is single-threaded and costs about 0.15 to 0.3 s of CPU per recording here, so recordings are
spread over ``workers`` processes, and every result is cached like an encoder's features.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from acula.training.bench.features import FeatureCache, FeatureTable, recording_key
from acula.training.data.records import Recording

_SMILE = None  # one openSMILE instance per worker process


def _smile():
    global _SMILE
    if _SMILE is None:
        import opensmile

        _SMILE = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
        )
    return _SMILE


def egemaps(samples: np.ndarray, rate: int) -> np.ndarray:
    """``(88,)`` float32 eGeMAPSv02 functionals of mono ``samples`` at ``rate`` Hz."""
    frame = _smile().process_signal(np.asarray(samples, dtype=np.float32), rate)
    return np.asarray(frame.to_numpy(), dtype=np.float32).reshape(-1)


def _one(job: tuple[str, str, int]) -> tuple[str, np.ndarray | None, str]:
    """Worker: ``(key, path, native rate)`` -> ``(key, features or None, error)``."""
    from acula.service.audio import decode_audio

    key, path, rate = job
    try:
        audio = decode_audio(Path(path), target_rate=rate)
        values = egemaps(audio.samples, rate)
    except Exception as exc:  # one unreadable file drops one recording; the table records why
        return key, None, f"{type(exc).__name__}: {exc}"
    if not np.all(np.isfinite(values)):
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return key, values, ""


class OpenSmileSource:
    """Feature source for the openSMILE baseline (no joint space: no retrieval or zero-shot row)."""

    has_joint = False

    def __init__(self, workers: int = 2, name: str = "opensmile") -> None:
        import opensmile

        self.name = name
        self.workers = max(1, workers)
        self.key = hashlib.sha256(
            f"opensmile|{opensmile.__version__}|eGeMAPSv02|native".encode()
        ).hexdigest()[:20]

    def extract(self, records: list[Recording], cache_root: Path, progress: bool = True) -> FeatureTable:
        from tqdm import tqdm

        cache = FeatureCache(cache_root, self.key, "openSMILE eGeMAPSv02 functionals at the native rate")
        found: dict[str, np.ndarray] = {}
        failed: dict[str, str] = {}
        jobs = []
        for rec in records:
            key = recording_key(rec)
            cached = cache.get(key, with_joint=False)
            if cached is not None:
                found[key] = cached[0]
            elif rec.audio_path is None or not rec.native_rate:
                failed[key] = "no audio"
            else:
                jobs.append((key, str(rec.audio_path), int(rec.native_rate)))
        bar = tqdm(total=len(jobs), desc=f"features {self.name}", disable=not progress, leave=False)
        if self.workers == 1 or len(jobs) < 8:
            results = map(_one, jobs)
            self._collect(results, cache, found, failed, bar)
        else:
            # fork (as torch's DataLoader workers do): workers start at once and need no importable
            # __main__; they run only openSMILE and the decoder, never torch, whose threads do not matter.
            method = "fork" if "fork" in get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(self.workers, mp_context=get_context(method)) as pool:
                self._collect(pool.map(_one, jobs, chunksize=16), cache, found, failed, bar)
        bar.close()
        keys = [recording_key(r) for r in records if recording_key(r) in found]
        if not keys:
            raise RuntimeError(f"opensmile: no recording could be processed ({len(failed)} failed)")
        return FeatureTable(keys, np.stack([found[k] for k in keys]), None, failed)

    @staticmethod
    def _collect(results, cache: FeatureCache, found: dict, failed: dict, bar) -> None:
        for key, values, error in results:
            bar.update(1)
            if values is None:
                failed[key] = error
                continue
            cache.put(key, values, None)
            found[key] = values
