"""One error-to-status map, and RFC 9457 ``application/problem+json`` responses built from it.

Every error a client can see has a stable ``code``; the map below gives its HTTP status and title, and the
problem's ``type`` is ``urn:acula:problem:<code>``. ``instance`` is the request id (also in ``X-Request-ID``),
so a gateway operator can find the log line. Anything unexpected becomes a 500 with no detail and is logged
with its traceback by ``RequestContextMiddleware`` (so it keeps the request id): the tests make sure no input
reaches that branch.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from acula.service.audio import AudioError
from acula.service.core.errors import ServiceError
from acula.service.logging import request_id_var

PROBLEM_JSON = "application/problem+json"

# code -> (status, title). The only place a status code is chosen for an error.
ERROR_MAP: dict[str, tuple[int, str]] = {
    # request shape
    "bad_request": (400, "Malformed HTTP request"),
    "headers_too_large": (431, "Request headers too large"),
    "invalid_request": (422, "Invalid request"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "too_large": (413, "Upload too large"),
    "body_timeout": (408, "Upload too slow"),
    "header_timeout": (408, "Request headers too slow"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "unauthorized": (401, "Missing or invalid API key"),
    # audio (codes from acula.service.audio)
    "empty_input": (422, "Empty upload"),
    "not_audio": (415, "Not a supported audio format"),
    "unsupported_codec": (415, "Unsupported audio codec"),
    "truncated": (422, "Truncated or corrupt audio"),
    "too_many_channels": (422, "Too many audio channels"),
    "rate_out_of_range": (422, "Sample rate out of range"),
    "too_short": (422, "Recording too short"),
    "too_long": (413, "Recording too long"),
    "too_many_samples": (413, "Recording too costly to decode"),
    "non_finite": (422, "Audio contains non-finite samples"),
    "level_out_of_range": (422, "Audio level far beyond full scale"),
    "format_changes": (422, "Audio format changes mid-stream"),
    "digital_silence": (422, "Recording is digital silence"),
    # request options
    "unknown_task": (422, "Unknown task"),
    "no_report_index": (422, "Bundle has no report index"),
    "no_text_side": (422, "Bundle has no text encoder"),
    "invalid_query": (422, "Invalid query"),
    # what the upload is
    "not_auscultation": (422, "Not an auscultation recording"),
    # capacity
    "overloaded": (503, "Overloaded, retry later"),
    "not_ready": (503, "Not ready"),
    "engine_error": (503, "Inference engine failed, retry later"),
    "timeout": (504, "Request deadline passed"),
    "invalid_model_output": (500, "The model produced an invalid output"),
    "internal": (500, "Internal error"),
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "not_ready",
}


class ApiError(StarletteHTTPException):
    """Raised by routes and middleware for an error that has a code in :data:`ERROR_MAP`."""

    def __init__(self, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=ERROR_MAP[code][0], detail=detail, headers=headers)
        self.code = code


def problem_body(code: str, detail: str, request_id: str, **extra: Any) -> dict[str, Any]:
    """The problem document for ``code`` (RFC 9457 members, then ``code`` and any extension members)."""
    status, title = ERROR_MAP[code]
    return {
        "type": f"urn:acula:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request_id,
        "code": code,
        **extra,
    }


def problem(code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """The problem+json response for ``code``."""
    body = problem_body(code, detail, request_id_var.get() or "", **extra)
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=PROBLEM_JSON)


def _record(request: Request, code: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.failures.labels(code=code).inc()
    request.state.error_code = code


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """Register the handlers that turn every exception into a problem response."""

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        code = getattr(exc, "code", "internal")
        if code not in ERROR_MAP:
            code = "internal"
        _record(request, code)
        retry = code in ("overloaded", "not_ready", "engine_error")
        headers = {"Retry-After": str(retry_after_s)} if retry else None
        extensions = exc.extensions if isinstance(exc, ServiceError) else {}
        return problem(code, str(exc), headers=headers, **extensions)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = getattr(exc, "code", None) or _HTTP_CODES.get(exc.status_code, "invalid_request")
        _record(request, code)
        headers = dict(exc.headers or {})
        if code == "unauthorized":
            headers.setdefault("WWW-Authenticate", 'Bearer realm="acula"')
        if code in ("overloaded", "not_ready"):
            headers.setdefault("Retry-After", str(retry_after_s))
        return problem(code, str(exc.detail), headers=headers or None)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        # Query and header parameters only: bodies are read by the upload path, which raises its own codes.
        assert isinstance(exc, RequestValidationError)
        _record(request, "invalid_request")
        errors = [
            {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", ""))}
            for error in exc.errors()
        ]
        return problem("invalid_request", "the request does not match the API", errors=errors)

    app.add_exception_handler(AudioError, service_error)
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
