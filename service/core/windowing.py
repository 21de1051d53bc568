"""One windowing policy for training, the CLI and the service.

A recording is cut into windows of one fixed length (``AudioContract.window_samples``), stepping by
``hop_samples``; the last window is zero-padded so that the encoder only ever sees one shape. Window
embeddings are then pooled into one per recording. Training, ``acula embed``/``acula predict`` and the
service all call these two functions, so they cannot cut audio differently.
"""

from __future__ import annotations

import numpy as np

from acula.service.bundle import AudioContract


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of the windows covering ``num_samples``: always at least one, the last may overhang."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(starts[-1] + hop)
    return starts


def cut_windows(samples: np.ndarray, contract: AudioContract) -> np.ndarray:
    """Mono float32 samples at the contract's rate -> ``(num_windows, window_samples)`` float32."""
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {samples.shape}")
    window, hop = contract.window_samples, contract.hop_samples
    starts = window_starts(len(samples), window, hop)
    out = np.zeros((len(starts), window), dtype=np.float32)
    for row, start in enumerate(starts):
        chunk = samples[start : start + window]
        out[row, : len(chunk)] = chunk
    return out


def pool_windows(embeddings: np.ndarray, contract: AudioContract) -> np.ndarray:
    """``(num_windows, dim)`` -> ``(dim,)`` by the contract's pooling."""
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"expected (num_windows, dim) with at least one window, got {embeddings.shape}")
    if contract.pooling == "max":
        return embeddings.max(axis=0)
    return embeddings.mean(axis=0)


def l2_normalise(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit-length rows (or vector), as the joint space and the inner-product index expect."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, eps)).astype(np.float32)
