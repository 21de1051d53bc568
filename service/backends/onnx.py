"""The encoder behind a small interface: ``run(windows) -> (embedding, joint)``, ``providers``, ``warm_up()``.

onnxruntime is configured explicitly (thread counts from settings, never from the host's core count) and
checked against the manifest at load: a graph whose input or output names or fixed dimensions differ from
``manifest.encoder`` is refused with a :class:`BundleError` naming the ONNX file, rather than failing on the
first request. onnxruntime silently falls back from CUDA to CPU; we compare what was asked with
``session.get_providers()`` and log a loud warning, and ``/v1/model`` reports the provider actually active.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from acula.service.bundle import BundleError, EncoderSpec, TensorSpec
from acula.service.core.errors import EngineError

log = logging.getLogger("acula.backend")

ProviderChoice = Literal["cpu", "cuda", "auto"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class EncoderBackend(Protocol):
    """What the pipeline needs from an encoder runtime."""

    @property
    def providers(self) -> list[str]: ...

    def run(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def warm_up(self, window_samples: int, max_batch_size: int) -> None: ...


def _requested_providers(choice: ProviderChoice, available: list[str]) -> list[str]:
    if choice == "cpu":
        return [CPU]
    if choice == "cuda" or CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def _check_tensor(kind: str, spec: TensorSpec, actual: object, file: str) -> None:
    """Names must match; a fixed dimension in the manifest must match a fixed one in the graph."""
    name = getattr(actual, "name", None)
    shape = list(getattr(actual, "shape", []) or [])
    if name != spec.name:
        raise BundleError(f"{file}: {kind} is named {name!r} but the manifest says {spec.name!r}", file=file)
    if len(shape) != len(spec.shape):
        raise BundleError(
            f"{file}: {kind} {spec.name!r} has rank {len(shape)} but the manifest says shape {spec.shape}",
            file,
        )
    for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
        if isinstance(want, int) and isinstance(got, int) and want != got:
            raise BundleError(
                f"{file}: {kind} {spec.name!r} axis {axis} is {got} but the manifest says {want}", file=file
            )


class OnnxEncoder:
    """One onnxruntime session for the bundle's encoder; thread-safe ``run`` as onnxruntime guarantees."""

    def __init__(
        self,
        path: Path,
        spec: EncoderSpec,
        provider: ProviderChoice = "auto",
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.file = spec.file
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Worker threads that spin between batches steal the CPU that decoding and HTTP need in a server.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # onnxruntime's own warnings go through our check below instead
        available = ort.get_available_providers()
        requested = _requested_providers(provider, available)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=requested)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise BundleError(
                f"{self.file}: onnxruntime cannot load the encoder: {exc}", file=self.file
            ) from exc
        self._providers: list[str] = list(self._session.get_providers())
        if CUDA in requested and CUDA not in self._providers:
            log.warning(
                "CUDA execution provider was requested but is NOT active; running on CPU",
                extra={"requested": requested, "active": self._providers, "available": available},
            )
        self._check_signature()
        self._outputs = [spec.embedding.name, spec.joint.name]

    def _check_signature(self) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise BundleError(f"{self.file}: expected one input, the graph has {len(inputs)}", file=self.file)
        _check_tensor("input", self.spec.input, inputs[0], self.file)
        outputs = {out.name: out for out in self._session.get_outputs()}
        for kind, spec in (("embedding output", self.spec.embedding), ("joint output", self.spec.joint)):
            if spec.name not in outputs:
                raise BundleError(
                    f"{self.file}: has no output {spec.name!r} ({kind}); it has {sorted(outputs)}",
                    file=self.file,
                )
            _check_tensor(kind, spec, outputs[spec.name], self.file)

    @property
    def providers(self) -> list[str]:
        """Execution providers the session really uses, best first."""
        return list(self._providers)

    def run(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(batch, window_samples)`` float32 -> ``(batch, dim)`` embedding, ``(batch, joint_dim)`` joint."""
        try:
            embedding, joint = self._session.run(self._outputs, {self.spec.input.name: windows})
        except Exception as exc:  # onnxruntime's own types: the caller gets one documented error (503)
            log.error("encoder run failed", extra={"error": str(exc)[:200], "batch": len(windows)})
            raise EngineError(f"the inference engine failed on a batch of {len(windows)}: {exc}") from exc
        return np.asarray(embedding, dtype=np.float32), np.asarray(joint, dtype=np.float32)

    def warm_up(self, window_samples: int, max_batch_size: int) -> None:
        """Run every batch size once on the fixed window length, so no request pays for a first-shape cost.

        Also checks that the outputs have the batch size and the fixed dimensions the manifest promises, and
        that they are finite: an encoder that answers NaN must not become ready. The input is a quiet noise,
        not zeros, so that an encoder whose arithmetic breaks on real signals shows it here.
        """
        noise = np.random.default_rng(0).standard_normal((max_batch_size, window_samples)).astype(np.float32)
        for batch in range(1, max_batch_size + 1):
            embedding, joint = self.run(0.05 * noise[:batch])
            for name, spec, out in (
                ("embedding", self.spec.embedding, embedding),
                ("joint", self.spec.joint, joint),
            ):
                if not np.isfinite(out).all():
                    raise BundleError(
                        f"{self.file}: the {name} output holds NaN or infinite values for a batch of {batch} "
                        "windows of quiet noise: the encoder is broken; export it again",
                        file=self.file,
                    )
                want = [batch if isinstance(dim, str) else dim for dim in spec.shape]
                if list(out.shape) != want:
                    raise BundleError(
                        f"{self.file}: {name} output has shape {list(out.shape)} for batch {batch}, "
                        f"the manifest implies {want}",
                        file=self.file,
                    )
