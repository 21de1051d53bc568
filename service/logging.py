"""Structured JSON logs that carry the request id, and never audio, file names, report text or patient data.

The request id lives in a context variable set by the request middleware, so every log line written while a
request is served (by us, uvicorn or a library) carries it. Callers log metadata only, passing fields through
``extra=``; the formatter writes whitelisted fields, so a stray ``extra`` cannot leak content.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("acula_request_id", default=None)

# Fields a log record may carry into the output; anything else passed in ``extra`` is dropped.
ALLOWED_FIELDS = (
    "method",
    "route",
    "status",
    "latency_ms",
    "client_id",
    "traceparent",
    "audio_seconds",
    "windows",
    "error_code",
    "model",
    "model_version",
    "provider",
    "requested",
    "active",
    "available",
    "host",
    "port",
    "bundle",
    "threads",
    "inference_workers",
    "max_batch_size",
    "max_inference_requests",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        for name in ALLOWED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "info", json_lines: bool = True) -> None:
    """Route our loggers and uvicorn's through one stderr handler; ours replaces uvicorn's access log."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
