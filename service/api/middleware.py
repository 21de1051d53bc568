"""Two pure-ASGI middlewares: request context (id, trace, access log, latency) and the streaming body limit.

Pure ASGI rather than ``BaseHTTPMiddleware`` because it adds no task per request and lets the body limit
count bytes as they arrive: a body larger than ``max_upload_bytes`` is refused by its ``Content-Length``
before anything is read, or as soon as the running count passes the limit when no length was sent, so an
unbounded body is never held in memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acula.service.api.errors import ApiError, problem
from acula.service.logging import request_id_var
from acula.service.metrics import Metrics

log = logging.getLogger("acula.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_QUIET_ROUTES = {"/healthz", "/readyz", "/metrics"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Request id in and out (``X-Request-ID``, generated when absent or unsafe), ``traceparent`` echoed,
    one JSON access-log line per request (metadata only), latency histogram by route template and status.
    Also the last line of defence: an exception that escapes the app becomes a problem+json 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics, client_id_header: str = "X-Client-ID") -> None:
        self.app = app
        self.metrics = metrics
        self.client_id_header = client_id_header.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _SAFE_ID.match(incoming) else uuid.uuid4().hex
        traceparent = _header(scope, b"traceparent")
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started_response = False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if traceparent:
                    headers.append((b"traceparent", traceparent.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"error_code": "internal"})
            self.metrics.failures.labels(code="internal").inc()
            if not started_response:
                await problem(
                    "internal", "unexpected server error; the request id identifies it in the logs"
                )(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            # A request refused before routing (admission) names its route in its state, when it is one.
            route = (
                getattr(scope.get("route"), "path", None)
                or scope.get("state", {}).get("route")
                or "unmatched"
            )
            self.metrics.request_latency.labels(
                route=route, method=scope["method"], status=str(status)
            ).observe(elapsed)
            if route not in _QUIET_ROUTES or status >= 400:
                state = scope.get("state", {})
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "latency_ms": round(elapsed * 1000.0, 2),
                        "client_id": _header(scope, self.client_id_header),
                        "traceparent": traceparent,
                        "audio_seconds": state.get("audio_seconds"),
                        "windows": state.get("windows"),
                        "error_code": state.get("error_code"),
                    },
                )
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """413 for bodies above ``max_bytes``, by Content-Length up front or by counting while streaming; 408
    when the client sends no body bytes for ``body_timeout_s`` (a slow-body "slowloris" client would
    otherwise hold a connection and a request slot for ever: uvicorn itself has no body timeout)."""

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            scope.setdefault("state", {})["error_code"] = "too_large"
            response = problem("too_large", f"the body is {declared} bytes; the limit is {self.max_bytes}")
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    "body_timeout", f"no body bytes for {self.body_timeout_s} s; send the whole upload"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError("too_large", f"the body passed the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)


class AdmissionMiddleware:
    """503 ``overloaded`` with ``Retry-After`` for a POST (the inference routes) when ``limit`` POSTs are
    already in the service, counted from their headers to their response, **before a byte of the body is
    read**. The runtime's own check (``max_queue``) comes after the multipart upload has been received and
    parsed on the event loop, which is the bottleneck under overload: excess requests then waited minutes for
    the loop instead of being refused (docs/PERFORMANCE.md). GETs (``/healthz``, ``/readyz``, ``/metrics``,
    ``/v1/model``) are never counted nor refused, so probes and scrapes are answered under any load.

    The connection stays open: uvicorn discards the rest of the unread body and the client reads the 503
    once it has sent it (closing instead would make the kernel reset the connection under the client's
    upload, so it could lose the response)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        retry_after_s: int,
        metrics: Metrics,
        routes: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = str(retry_after_s)
        self.metrics = metrics
        self.routes = routes  # the app's POST paths: a refusal is labelled with one of them, not arbitrary
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            state = scope.setdefault("state", {})
            state["error_code"] = "overloaded"
            path = scope["path"]
            root = scope.get("root_path", "")
            path = path[len(root) :] if root and path.startswith(root) else path
            if path in self.routes:
                state["route"] = path
            self.metrics.failures.labels(code="overloaded").inc()
            response = problem(
                "overloaded",
                f"{self.active} requests are already in the service (limit {self.limit}); retry later",
                headers={"Retry-After": self.retry_after},
            )
            await response(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
