"""Linear probes on the pooled window embedding, in numpy (no scikit-learn, no pickle).

Each probe is an ``.npz`` read with ``allow_pickle=False`` holding:

- ``weight`` ``(outputs, dim)`` (scikit-learn's ``coef_`` layout) and ``bias`` ``(outputs,)``;
- ``mean`` and ``scale`` ``(dim,)``: the standardisation fitted on the training side, applied first;
- regression only, optional: ``target_mean`` and ``target_scale`` to undo a standardised target;
- multilabel only, optional: ``threshold`` ``(outputs,)`` (default 0.5);
- classifiers only, optional: ``temperature`` ``(1,)``, or ``(outputs,)`` for multilabel: the logits are
  divided by it before the softmax or sigmoid (temperature scaling, fitted at export on held-out parts of the
  training side). Absent means 1: the probabilities are the raw ones, and every answer says
  ``calibrated: false``, so a client never mistakes an uncalibrated score for a calibrated one.

Classification uses a softmax over the outputs; a binary classifier stored with one output row (as
scikit-learn stores it) gives ``[1 - sigmoid(z), sigmoid(z)]``. Multilabel uses a sigmoid per label,
regression the identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acula.service.bundle import BundleError, ProbeSpec


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


@dataclass(frozen=True)
class TaskOutput:
    """One probe's answer for one embedding (pooled or a single window)."""

    task: str
    kind: str
    probabilities: dict[str, float] = field(default_factory=dict)
    label: str | None = None
    positive: list[str] = field(default_factory=list)
    value: float | None = None
    unit: str | None = None
    purpose: str = "diagnostic"
    calibrated: bool = False


class LinearProbe:
    """A probe loaded from its ``.npz`` and checked against the embedding dimension and its labels."""

    def __init__(self, spec: ProbeSpec, path: Path, dim: int) -> None:
        self.spec = spec
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: np.asarray(data[key], dtype=np.float64) for key in data.files}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{spec.file}: not a readable .npz probe: {exc}", file=spec.file) from exc
        missing = {"weight", "bias"} - set(arrays)
        if missing:
            raise BundleError(f"{spec.file}: probe lacks {sorted(missing)}", file=spec.file)
        self.weight = np.atleast_2d(arrays["weight"])
        self.bias = np.atleast_1d(arrays["bias"])
        self.mean = arrays.get("mean", np.zeros(dim))
        self.scale = arrays.get("scale", np.ones(dim))
        self.target_mean = float(np.ravel(arrays.get("target_mean", np.zeros(1)))[0])
        self.target_scale = float(np.ravel(arrays.get("target_scale", np.ones(1)))[0])
        outputs = self.weight.shape[0]
        self.threshold = np.ravel(arrays.get("threshold", np.full(outputs, 0.5)))
        self.temperature = np.ravel(arrays["temperature"]) if "temperature" in arrays else None
        self._validate(dim, outputs)
        self._check_temperature(outputs)
        self.scale = np.where(self.scale == 0, 1.0, self.scale)
        # The standardisation folded into the weights once: ((x - mean) / scale) @ W.T + b equals
        # x @ (W / scale).T + (b - (mean / scale) @ W.T), one matrix product per call instead of four steps;
        # the temperature too: (x @ W.T + b) / T equals x @ (W.T / T) + b / T.
        divisor = np.ones(outputs) if self.temperature is None else np.broadcast_to(self.temperature, outputs)
        self._folded_weight = np.ascontiguousarray((self.weight / self.scale).T / divisor)
        self._folded_bias = (self.bias - (self.mean / self.scale) @ self.weight.T) / divisor

    @property
    def calibrated(self) -> bool:
        """Whether the probabilities are temperature-scaled (the probe file holds a temperature)."""
        return self.temperature is not None

    def _validate(self, dim: int, outputs: int) -> None:
        spec, file = self.spec, self.spec.file
        if self.weight.shape[1] != dim or self.mean.shape != (dim,) or self.scale.shape != (dim,):
            raise BundleError(
                f"{file}: weight {self.weight.shape}, mean {self.mean.shape}, scale {self.scale.shape} "
                f"do not fit embedding dimension {dim}",
                file=file,
            )
        if self.bias.shape != (outputs,):
            raise BundleError(
                f"{file}: bias {self.bias.shape} does not match weight {self.weight.shape}", file
            )
        expected = {
            "classification": {len(spec.labels)} | ({1} if len(spec.labels) == 2 else set()),
            "multilabel": {len(spec.labels)},
            "regression": {1},
        }[spec.kind]
        if outputs not in expected:
            raise BundleError(
                f"{file}: {spec.kind} probe has {outputs} outputs for labels {spec.labels}", file=file
            )

    def _check_temperature(self, outputs: int) -> None:
        """The stored temperature fits the outputs, is positive, and is the one the manifest documents."""
        spec, file, temperature = self.spec, self.spec.file, self.temperature
        if temperature is None:
            if spec.calibration is not None:
                raise BundleError(
                    f"{file}: the manifest documents a calibration for {spec.task!r} but the probe file "
                    "holds no temperature",
                    file=file,
                )
            return
        if spec.kind == "regression":
            raise BundleError(f"{file}: a temperature scales classifier logits, not a regression", file)
        allowed = {1, outputs} if spec.kind == "multilabel" else {1}
        if len(temperature) not in allowed or not np.all(np.isfinite(temperature) & (temperature > 0)):
            raise BundleError(
                f"{file}: temperature {temperature.tolist()} must be positive, one value"
                + (f" or {outputs} (one per label)" if spec.kind == "multilabel" else ""),
                file=file,
            )
        documented = None if spec.calibration is None else np.asarray(spec.calibration.temperature)
        if documented is not None and (
            documented.shape != temperature.shape or not np.allclose(documented, temperature, rtol=1e-4)
        ):
            raise BundleError(
                f"{file}: temperature {temperature.tolist()} differs from the manifest's calibration "
                f"{documented.tolist()}",
                file=file,
            )

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, dim)`` -> ``(n, classes)`` probabilities, or ``(n, 1)`` values for regression."""
        z = np.asarray(embeddings, dtype=np.float64) @ self._folded_weight + self._folded_bias
        if self.spec.kind == "classification":
            if z.shape[1] == 1:
                p = _sigmoid(z[:, 0])
                return np.stack([1.0 - p, p], axis=1)
            return _softmax(z)
        if self.spec.kind == "multilabel":
            return _sigmoid(z)
        return z * self.target_scale + self.target_mean

    def describe(self, row: np.ndarray) -> TaskOutput:
        """Turn one row of :meth:`scores` into a labelled answer."""
        spec = self.spec
        if spec.kind == "regression":
            return TaskOutput(spec.task, spec.kind, value=float(row[0]), unit=spec.unit, purpose=spec.purpose)
        probabilities = {label: float(p) for label, p in zip(spec.labels, row, strict=True)}
        if spec.kind == "classification":
            label, positive = spec.labels[int(np.argmax(row))], []
        else:
            label = None
            positive = [name for name, p, t in zip(spec.labels, row, self.threshold, strict=True) if p >= t]
        return TaskOutput(
            spec.task,
            spec.kind,
            probabilities=probabilities,
            label=label,
            positive=positive,
            purpose=spec.purpose,
            calibrated=self.calibrated,
        )


def load_probes(bundle_dir: Path, specs: list[ProbeSpec], dim: int) -> dict[str, LinearProbe]:
    """Every probe of the manifest, keyed by task name, in manifest order."""
    return {spec.task: LinearProbe(spec, Path(bundle_dir) / spec.file, dim) for spec in specs}
