"""How unlike the training recordings an upload is: the out-of-distribution score.

``ood_reference.npz`` (read with ``allow_pickle=False``) holds the pooled embeddings of held-out
training-side recordings, whitened and projected at export:

- ``mean`` ``(D,)`` and ``projection`` ``(D, P)``: ``z = normalise((x - mean) @ projection)``;
- ``reference`` ``(N, P)``: the reference rows, each L2-normalised the same way.

The score is ``1 - mean of the k largest cosine similarities between z and the reference rows``: 0 for an
upload that sits on top of training recordings, up to 2 for one pointing away from all of them. The
manifest's threshold is a quantile of held-out training-side scores, so a flag means "fewer than
(1 - quantile) of real training-like recordings score this far out": the probes' answers then deserve less
trust, whatever the sound type says. Torch-free, like the rest of the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acula.service.bundle import BundleError, OutOfDistributionSpec
from acula.service.core.windowing import l2_normalise


@dataclass(frozen=True)
class OodResult:
    score: float
    threshold: float
    flagged: bool


class OodScorer:
    """The reference set of a bundle, checked against the embedding dimension on load."""

    def __init__(self, bundle_dir: Path, spec: OutOfDistributionSpec, dim: int) -> None:
        self.spec = spec
        file = spec.file
        try:
            with np.load(Path(bundle_dir) / file, allow_pickle=False) as data:
                arrays = {key: np.asarray(data[key], dtype=np.float32) for key in data.files}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{file}: not a readable .npz reference: {exc}", file=file) from exc
        missing = {"mean", "projection", "reference"} - set(arrays)
        if missing:
            raise BundleError(f"{file}: reference lacks {sorted(missing)}", file=file)
        self.mean, self.projection, self.reference = arrays["mean"], arrays["projection"], arrays["reference"]
        if (
            self.mean.shape != (dim,)
            or self.projection.ndim != 2
            or self.projection.shape[0] != dim
            or self.reference.ndim != 2
            or self.reference.shape[1] != self.projection.shape[1]
        ):
            raise BundleError(
                f"{file}: mean {self.mean.shape}, projection {self.projection.shape}, reference "
                f"{self.reference.shape} do not fit embedding dimension {dim}",
                file=file,
            )
        rows = len(self.reference)
        if rows < spec.k or rows != spec.reference_count:
            raise BundleError(
                f"{file}: {rows} reference rows; the manifest says {spec.reference_count} and k={spec.k}",
                file=file,
            )
        norms = np.linalg.norm(self.reference, axis=1)
        if not np.all(np.isfinite(self.reference)) or not np.allclose(norms, 1.0, atol=1e-3):
            raise BundleError(f"{file}: reference rows must be finite and L2-normalised", file=file)

    def score(self, embedding: np.ndarray) -> OodResult:
        """The score of one pooled embedding ``(D,)``, and whether it passes the manifest's threshold."""
        z = l2_normalise((np.asarray(embedding, dtype=np.float32) - self.mean) @ self.projection)
        similarities = self.reference @ z
        nearest = np.partition(similarities, len(similarities) - self.spec.k)[-self.spec.k :]
        score = float(1.0 - nearest.mean())
        return OodResult(score=score, threshold=self.spec.threshold, flagged=score > self.spec.threshold)
