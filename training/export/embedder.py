"""Pooled embeddings of whole recordings through the exported ONNX graph, as the service computes them.

Everything export fits on embeddings (probes, the sound-type classifier, the out-of-distribution reference)
reads them from here, so it is fitted on exactly what the service will feed it: the graph on disk, the
service's own windowing and pooling, the service's encoder wrapper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from acula.service.bundle import AudioContract, EncoderSpec
from acula.service.core.windowing import cut_windows, l2_normalise, pool_windows
from acula.training.data.records import Recording


class RecordingEmbedder:
    """Decodes recordings through the training audio cache and embeds them with the bundle's encoder."""

    def __init__(self, onnx_path: Path, spec: EncoderSpec, contract: AudioContract, cache_dir: Path | None):
        from acula.service.backends.onnx import OnnxEncoder
        from acula.training.train.audio_dataset import AudioCache

        self.encoder = OnnxEncoder(
            onnx_path, spec, provider="cpu", intra_op_threads=max(1, torch.get_num_threads())
        )
        self.contract = contract
        self.cache = AudioCache(cache_dir, contract.sample_rate)
        self._memo: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def usable(self, records: Sequence[Recording]) -> list[Recording]:
        """The records whose audio decodes (decoding them into the cache on the way)."""
        return self.cache.prepare(list(records), progress=False)

    def samples(self, record: Recording) -> np.ndarray:
        return np.asarray(self.cache.load(record), dtype=np.float32)

    def embed(self, records: Sequence[Recording], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """``(n, D)`` pooled embeddings and ``(n, J)`` pooled, re-normalised joint embeddings."""
        pending: list[tuple[Recording, np.ndarray]] = []
        for record in records:
            if (record.dataset, record.recording_id) in self._memo:
                continue
            pending.append((record, cut_windows(self.samples(record), self.contract)))
            if sum(len(w) for _, w in pending) >= 4 * batch_size:
                self._flush(pending, batch_size)
        self._flush(pending, batch_size)
        pairs = [self._memo[(r.dataset, r.recording_id)] for r in records]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def embed_windows(self, windows: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Pooled embedding and joint of one clip already cut into windows (generated audio: no record)."""
        emb, joint = self._run(windows, batch_size)
        return pool_windows(emb, self.contract), l2_normalise(pool_windows(joint, self.contract))

    def _run(self, windows: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        embeddings, joints = [], []
        for start in range(0, len(windows), batch_size):
            e, j = self.encoder.run(windows[start : start + batch_size])
            embeddings.append(e)
            joints.append(j)
        return np.concatenate(embeddings), np.concatenate(joints)

    def _flush(self, pending: list[tuple[Recording, np.ndarray]], batch_size: int) -> None:
        """Embed every pending recording's windows in shared batches, then pool each recording's rows."""
        if not pending:
            return
        emb, joint = self._run(np.concatenate([w for _, w in pending]), batch_size)
        offset = 0
        for record, w in pending:
            rows = slice(offset, offset + len(w))
            self._memo[(record.dataset, record.recording_id)] = (
                pool_windows(emb[rows], self.contract),
                l2_normalise(pool_windows(joint[rows], self.contract)),
            )
            offset += len(w)
        pending.clear()
