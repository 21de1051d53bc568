"""Errors the inference core raises; each carries a stable ``code`` that ``service.api.errors`` maps to HTTP.

The core never knows about HTTP: the CLI shows the same errors as messages, the service as problem+json.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: ``code`` is stable and documented, the message is for people."""

    code = "service_error"


class UnknownTask(ServiceError):
    code = "unknown_task"


class NoReportIndex(ServiceError):
    code = "no_report_index"


class NoTextSide(ServiceError):
    code = "no_text_side"


class InvalidQuery(ServiceError):
    code = "invalid_query"


class Overloaded(ServiceError):
    """The batcher's queue is full: the caller should retry later (503 with Retry-After)."""

    code = "overloaded"


class NotReady(ServiceError):
    code = "not_ready"


class EngineError(ServiceError):
    """The encoder runtime raised (e.g. onnxruntime out of memory, CUDA error): 503, the service stays up
    and the next batch tries again, so a transient fault clears without a restart."""

    code = "engine_error"


class InferenceTimeout(ServiceError):
    code = "timeout"
