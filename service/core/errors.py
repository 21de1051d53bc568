"""Errors the inference core raises; each carries a stable ``code`` that ``service.api.errors`` maps to HTTP.

The core never knows about HTTP: the CLI shows the same errors as messages, the service as problem+json.
"""

from __future__ import annotations

import dataclasses

import numpy as np


class ServiceError(Exception):
    """Base class: ``code`` is stable and documented, the message is for people."""

    code = "service_error"

    @property
    def extensions(self) -> dict[str, object]:
        """Extra members of the problem+json body (RFC 9457 extension members); none by default."""
        return {}


class UnknownTask(ServiceError):
    code = "unknown_task"


class NoReportIndex(ServiceError):
    code = "no_report_index"


class NoTextSide(ServiceError):
    code = "no_text_side"


class InvalidQuery(ServiceError):
    code = "invalid_query"


class NotAuscultation(ServiceError):
    """The sound-type classifier is confident the upload is no heart, lung, cough or breathing sound
    (speech, music, noise...): a 422 rather than a list of confident but meaningless findings. The problem
    carries the classifier's probabilities and the model that decided, so the client can tell a refusal
    from a defect, and state ``sound_type`` if the model is wrong."""

    code = "not_auscultation"

    def __init__(
        self, message: str, probability: float, probabilities: dict[str, float], model: dict
    ) -> None:
        super().__init__(message)
        self.probability = probability
        self.probabilities = probabilities
        self.model = model

    @property
    def extensions(self) -> dict[str, object]:
        return {"probability": self.probability, "probabilities": self.probabilities, "model": self.model}


class Overloaded(ServiceError):
    """Admission is full (``ACULA_MAX_INFERENCE_REQUESTS``): the caller should retry later (503 with
    Retry-After)."""

    code = "overloaded"


class NotReady(ServiceError):
    code = "not_ready"


class EngineError(ServiceError):
    """The encoder runtime raised (e.g. onnxruntime out of memory, CUDA error): 503, the service stays up
    and the next batch tries again, so a transient fault clears without a restart."""

    code = "engine_error"


class InvalidModelOutput(ServiceError):
    """The model produced NaN or an infinity. Nothing is answered then (never a default label): the input
    checks should make this impossible for any upload, so it is a defect of the bundle or the runtime, a
    500 that an operator sees."""

    code = "invalid_model_output"

    @classmethod
    def check(cls, stage: str, **outputs: object) -> None:
        """Raise unless every number in ``outputs`` (arrays, numbers, and dicts, lists and dataclasses of
        them) is finite."""
        for name, value in outputs.items():
            if not _finite(value):
                raise cls(f"the {stage} produced a non-finite value in '{name}': no answer is given")


def _finite(value: object) -> bool:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _finite(vars(value))
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(item) for item in value)
    if value is None or isinstance(value, str | bool):
        return True
    return bool(np.isfinite(np.asarray(value, dtype=np.float64)).all())
