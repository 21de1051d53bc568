"""Pure-ASGI middlewares, outermost first: request context, authentication, admission, body limits.

Pure ASGI rather than ``BaseHTTPMiddleware``: no task per request, and each can act on the request before
the body is read. The order is the order of what a request must pass, cheapest refusal first:

1. :class:`RequestContextMiddleware`: request id, ``traceparent``, the header-count limit, one access-log
   line and the latency histogram for every request, and the outcome of the ones that end abnormally (a
   client that went away is a 499 at info level, not a server error; a request cut at shutdown is counted
   so that ``acula serve`` can exit non-zero).
2. :class:`AuthMiddleware`: 401 before anything else, on every route but the probes and the API docs, so an
   unauthenticated client can neither take an admission slot nor make the service read its body.
3. :class:`AdmissionMiddleware`: the runtime's one :class:`~acula.service.core.admission.Admission` for every
   POST, entered before the body is read, and one deadline for the whole request (``request_timeout_s``,
   body, decode queue, decode and inference included): the longest a slot can be held, whatever the client
   does.
4. :class:`BodyLimitMiddleware`: the body's size (by ``Content-Length``, then by counting) and one deadline
   for the whole body (``body_timeout_s``), so a client sending a byte a second is cut off as surely as one
   that stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
import uuid

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acula.service.api.errors import ApiError, problem
from acula.service.core.errors import Overloaded
from acula.service.logging import request_id_var
from acula.service.runtime import Runtime

log = logging.getLogger("acula.access")

_SAFE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# W3C Trace Context: version-traceid-parentid-flags, lowercase hex (version ff is invalid). Anything else is
# neither echoed nor logged: a header is client input, and a huge one would be copied into every log line.
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_QUIET_ROUTES = {"/healthz", "/readyz", "/metrics"}
# Routes that never need a key: probes and scrapes (their callers hold no key) and the API description.
PUBLIC_ROUTES = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection before the response"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:  # ASGI servers lower-case header names
            return bytes(value)
    return None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def app_path(scope: Scope) -> str:
    """The request path without the gateway's prefix (``root_path``), as routes are declared."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    runtime: Runtime,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    """A problem response from a middleware (no route ran): counted and logged like a route's."""
    scope.setdefault("state", {})["error_code"] = code
    runtime.metrics.failures.labels(code=code).inc()
    await problem(code, detail, headers=headers)(scope, receive, send)


class RequestContextMiddleware:
    """Request id in and out (``X-Request-ID``, generated when absent or unsafe), a valid ``traceparent``
    echoed, at most ``runtime.settings.max_headers`` headers (431), one JSON access-log line per request
    (metadata only), latency histogram by route template and status. Also the last line of defence: an
    exception that escapes the app becomes a problem+json 500, except a client's disconnect (499, info)."""

    def __init__(self, app: ASGIApp, runtime: Runtime, routes: frozenset[str]) -> None:
        self.app = app
        self.runtime = runtime
        self.metrics = runtime.metrics
        self.client_id_header = runtime.settings.client_id_header.lower().encode()
        self.max_headers = runtime.settings.max_headers
        self.routes = routes  # every path the app serves: a request no route handled is labelled by one

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _text(_header(scope, b"x-request-id"))
        request_id = incoming if incoming and _SAFE_ID.fullmatch(incoming) else uuid.uuid4().hex
        traceparent = _text(_header(scope, b"traceparent"))
        traceparent = traceparent if traceparent and _TRACEPARENT.fullmatch(traceparent) else None
        token = request_id_var.set(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
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
                    headers.append((b"traceparent", traceparent.encode()))
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            if len(scope["headers"]) > self.max_headers:
                await refuse(
                    scope,
                    receive,
                    send_with_id,
                    self.runtime,
                    "headers_too_large",
                    f"the request has {len(scope['headers'])} headers; at most {self.max_headers} are "
                    "accepted",
                    headers={"Connection": "close"},
                )
            else:
                await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # Not a server error: anyone could inflate the 5xx rate an operator alerts on by hanging up.
            status = CLIENT_CLOSED
            state["error_code"] = "client_closed"
            self.metrics.failures.labels(code="client_closed").inc()
        except asyncio.CancelledError:
            # Only the server cancels a request task: at shutdown, when the graceful timeout has run out.
            status = CLIENT_CLOSED if not started_response else status
            state["error_code"] = "cut_at_shutdown"
            self.runtime.cut_at_shutdown += 1
            raise
        except Exception:
            log.exception("unhandled error", extra={"error_code": "internal"})
            self.metrics.failures.labels(code="internal").inc()
            if not started_response:
                await problem(
                    "internal", "unexpected server error; the request id identifies it in the logs"
                )(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, status, time.perf_counter() - started, traceparent)
            request_id_var.reset(token)

    def _record(self, scope: Scope, status: int, elapsed: float, traceparent: str | None) -> None:
        state = scope.get("state", {})
        path = app_path(scope)
        route = getattr(scope.get("route"), "path", None) or (path if path in self.routes else "unmatched")
        self.metrics.request_latency.labels(route=route, method=scope["method"], status=str(status)).observe(
            elapsed
        )
        if route in _QUIET_ROUTES and status < 400:
            return
        log.info(
            "request",
            extra={
                "method": scope["method"],
                "route": route,
                "status": status,
                "latency_ms": round(elapsed * 1000.0, 2),
                "client_id": _text(_header(scope, self.client_id_header)),
                "traceparent": traceparent,
                "audio_seconds": state.get("audio_seconds"),
                "windows": state.get("windows"),
                "error_code": state.get("error_code"),
            },
        )


def presented_key(scope: Scope) -> bytes | None:
    """The key in ``X-API-Key`` or ``Authorization: Bearer``, as the raw header bytes."""
    key = _header(scope, b"x-api-key")
    if key:
        return key.strip()
    scheme, _, token = (_header(scope, b"authorization") or b"").partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return None


class AuthMiddleware:
    """401 ``unauthorized`` when keys are configured and the request carries none of them, before any body
    is read, on every route but :data:`PUBLIC_ROUTES`. Keys are compared as SHA-256 digests with
    ``hmac.compare_digest`` against every configured key, so timing reveals neither which key nor how much of
    it matched, nor its length."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.digests = [hashlib.sha256(key).digest() for key in runtime.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.digests or app_path(scope) in PUBLIC_ROUTES:
            await self.app(scope, receive, send)
            return
        presented = presented_key(scope)
        if presented is not None:
            candidate = hashlib.sha256(presented).digest()
            matched = False
            for digest in self.digests:
                matched |= hmac.compare_digest(candidate, digest)
            if matched:
                await self.app(scope, receive, send)
                return
        detail = (
            "the API key is not valid"
            if presented
            else "send an API key in X-API-Key or Authorization: Bearer"
        )
        await refuse(
            scope,
            receive,
            send,
            self.runtime,
            "unauthorized",
            detail,
            {"WWW-Authenticate": 'Bearer realm="acula"'},
        )


class AdmissionMiddleware:
    """Every POST (the inference routes) enters the runtime's admission before a byte of its body is read:
    beyond the limit it gets 503 ``overloaded`` with ``Retry-After`` at once. GETs (``/healthz``, ``/readyz``,
    ``/metrics``, ``/v1/model``) are never counted nor refused, so probes and scrapes are answered under any
    load. An admitted request has ``request_timeout_s`` for everything; past it, 504 ``timeout``.

    Once its body is in, an admitted request is watched for its client going away before the answer: it is
    then cancelled (a decode or a batch it still waits for never runs) and ends as a client disconnect, so a
    client that uploads and hangs up cannot make the service work for nobody.

    A refused request's connection stays open: the server discards the rest of the unread body and the client
    reads the 503 once it has sent it (closing instead would make the kernel reset the connection under the
    client's upload, so it could lose the response)."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.admission = runtime.admission
        self.deadline_s = runtime.settings.request_timeout_s
        self.retry_after = str(runtime.settings.retry_after_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            self.admission.enter()
        except Overloaded as exc:
            await refuse(
                scope,
                receive,
                send,
                self.runtime,
                "overloaded",
                f"{exc}; retry later",
                {"Retry-After": self.retry_after},
            )
            return
        started = gone = False
        body_in = asyncio.Event()
        task = asyncio.current_task()
        assert task is not None

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def receive_tracked() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_in.set()
            return message

        async def watch() -> None:
            nonlocal gone
            await body_in.wait()
            # The server answers a receive() after the body only at a disconnect or once the response is sent.
            if (await receive())["type"] == "http.disconnect" and not started:
                gone = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            async with asyncio.timeout(self.deadline_s):
                await self.app(scope, receive_tracked, send_tracked)
        except asyncio.CancelledError:
            if gone and task.uncancel() == 0:  # cancelled by the watcher alone, not by the server
                raise ClientDisconnect() from None
            raise
        except TimeoutError:
            if started:  # the client is not reading its response: nothing more to say, the server closes it
                log.info("response abandoned at the request deadline", extra={"error_code": "timeout"})
                return
            await refuse(
                scope,
                receive,
                send,
                self.runtime,
                "timeout",
                f"no result within {self.deadline_s:g} s (ACULA_REQUEST_TIMEOUT_S): the service is busy; "
                "retry",
                {"Connection": "close"},
            )
        finally:
            watcher.cancel()
            self.admission.leave()


class BodyLimitMiddleware:
    """413 for bodies above ``max_upload_bytes``, by ``Content-Length`` up front or by counting while
    streaming; 408 when the whole body has not arrived ``body_timeout_s`` after the headers. A deadline for
    the whole body, not for the pause between two chunks: a client sending a byte every few seconds would
    otherwise hold its admission slot for as long as it likes. Both refusals close the connection (the rest
    of the body is never read)."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.max_bytes = runtime.settings.max_upload_bytes
        self.body_timeout_s = runtime.settings.body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _text(_header(scope, b"content-length"))
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            scope.setdefault("state", {})["error_code"] = "too_large"
            response = problem(
                "too_large",
                f"the body is {declared.strip()} bytes; the limit is {self.max_bytes}",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: what follows is a wait for a disconnect, which has no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    "body_timeout",
                    f"the body did not arrive within {self.body_timeout_s:g} s of the headers; send it "
                    "faster, or through the gateway, which buffers uploads",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise ApiError(
                        "too_large",
                        f"the body passed the limit of {self.max_bytes} bytes",
                        headers={"Connection": "close"},
                    )
            return message

        await self.app(scope, limited_receive, send)
