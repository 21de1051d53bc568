"""How unlike the training recordings an upload is: the out-of-distribution score.

``ood_reference.npz`` (read with ``allow_pickle=False``) holds the pooled embeddings of held-out
training-side recordings, whitened and projected at export:

- ``mean`` ``(D,)`` and ``projection`` ``(D, P)``: ``z = normalise((x - mean) @ projection)``;
- ``reference`` ``(N, P)``: the reference rows, each L2-normalised the same way;
- ``row_sound_types`` ``(N,)`` (bundles that have ``sound_type_thresholds``): each row's sound type, or ""
  for a recording that has none (a heart-and-lung mixture).

The score is ``1 - mean of the k largest cosine similarities between z and the reference rows``: 0 for an
upload that sits on top of training recordings, up to 2 for one pointing away from all of them. The
manifest's threshold is a quantile of held-out training-side scores, so a flag means "fewer than
(1 - quantile) of real training-like recordings score this far out": the probes' answers then deserve less
trust, whatever the sound type says.

The same score against the rows of one sound type only (:meth:`OodScorer.score_as`) asks a narrower
question: is the upload like the training recordings *of the type the classifier names*? The classifier
tells its training sources apart better than it tells sound types apart (a lung recording from an unseen
stethoscope can be "heart, 0.99"), but such an upload usually sits far from every training heart sound even
when it is near some training recording; the gate then does not take the model's sound type. Torch-free,
like the rest of the service.
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
                arrays = {key: np.asarray(data[key]) for key in data.files}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{file}: not a readable .npz reference: {exc}", file=file) from exc
        missing = {"mean", "projection", "reference"} - set(arrays)
        if missing:
            raise BundleError(f"{file}: reference lacks {sorted(missing)}", file=file)
        try:
            self.mean, self.projection, self.reference = (
                np.asarray(arrays[key], dtype=np.float32) for key in ("mean", "projection", "reference")
            )
        except ValueError as exc:
            raise BundleError(
                f"{file}: mean, projection and reference must be numeric: {exc}", file=file
            ) from exc
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
        rows_of_type = self._rows_of_type(file, arrays.get("row_sound_types"))
        # Each type's rows as their own contiguous matrix: indexing per request would copy them every time.
        self.reference_of_type = {kind: self.reference[rows] for kind, rows in rows_of_type.items()}

    def _rows_of_type(self, file: str, types: np.ndarray | None) -> dict[str, np.ndarray]:
        """The reference rows of each sound type that has a threshold, checked: k rows at least."""
        wanted = self.spec.sound_type_thresholds
        if not wanted:
            return {}
        if types is None or types.shape != (len(self.reference),) or types.dtype.kind != "U":
            found = "none" if types is None else f"{types.dtype} {types.shape}"
            raise BundleError(
                f"{file}: the manifest sets sound_type_thresholds, so the file needs row_sound_types, one "
                f"string per reference row ({len(self.reference)}); found {found}",
                file=file,
            )
        rows: dict[str, np.ndarray] = {kind: np.flatnonzero(types == kind) for kind in wanted}
        short = {kind: len(found) for kind, found in rows.items() if len(found) < self.spec.k}
        if short:
            raise BundleError(f"{file}: fewer than k={self.spec.k} reference rows of {short}", file=file)
        return rows

    def score(self, embedding: np.ndarray) -> OodResult:
        """The score of one pooled embedding ``(D,)``, and whether it passes the manifest's threshold."""
        return self._result(self._project(embedding), self.reference, self.spec.threshold)

    def score_as(self, embedding: np.ndarray, sound_type: str) -> OodResult | None:
        """The score against the reference rows of ``sound_type`` only, flagged above that type's
        threshold; None when the bundle sets no threshold for it (older bundles, not_auscultation)."""
        return self._typed(self._project(embedding), sound_type)

    def assess(self, embedding: np.ndarray, sound_type: str | None) -> tuple[OodResult, OodResult | None]:
        """:meth:`score` and :meth:`score_as` from one projection of the embedding (what a request needs)."""
        z = self._project(embedding)
        overall = self._result(z, self.reference, self.spec.threshold)
        return overall, None if sound_type is None else self._typed(z, sound_type)

    def _typed(self, z: np.ndarray, sound_type: str) -> OodResult | None:
        reference = self.reference_of_type.get(sound_type)
        if reference is None:
            return None
        threshold = self.spec.sound_type_thresholds[sound_type]  # type: ignore[index]
        return self._result(z, reference, threshold)

    def _project(self, embedding: np.ndarray) -> np.ndarray:
        return l2_normalise((np.asarray(embedding, dtype=np.float32) - self.mean) @ self.projection)

    def _result(self, z: np.ndarray, reference: np.ndarray, threshold: float) -> OodResult:
        similarities = reference @ z
        nearest = np.partition(similarities, len(similarities) - self.spec.k)[-self.spec.k :]
        score = float(1.0 - nearest.mean())
        return OodResult(score=score, threshold=threshold, flagged=score > threshold)
