"""The HTTP/1.1 protocol the service runs on: uvicorn's h11 protocol, with the server's own limits on request
heads, answering what it refuses as problem+json.

Why h11 rather than uvicorn's default httptools: httptools takes request headers of any size and count, and
joins a header's pieces as they arrive, so one huge header kept the event loop (and ``/healthz``) busy for
seconds. h11 refuses a request line plus headers larger than ``h11_max_incomplete_event_size``, a limit
uvicorn exposes, before buffering more; the service sets it to ``ACULA_MAX_HEADER_BYTES`` and counts headers
itself (``RequestContextMiddleware``, 431). Parsing in Python costs more per request than httptools' C, but
little beside decoding and inference (measured in docs/RELIABILITY.md).

uvicorn also has no deadline for a request head: a client that connects and sends nothing, or a header byte
now and then, holds its connection for ever (uvicorn's keep-alive timer stops at the first byte). Such a
client holds no admission slot, but it holds a connection and a file descriptor; the gateway bounds it
(``client_header_timeout``), and so does :class:`ProblemH11Protocol` itself, with ``ACULA_HEADER_TIMEOUT_S``
from the moment the server waits for a request head (connection opened, or the first byte of the next one).

uvicorn answers a request it cannot parse before any application code runs, with ``text/plain``;
:class:`ProblemH11Protocol` overrides that one method (``send_400_response``, which uvicorn's protocols call
for every parse failure) to answer as every other error: ``application/problem+json`` with a request id,
and logged (``400 bad_request``, or ``431 headers_too_large`` when the head passed the size limit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from acula.service.api.errors import PROBLEM_JSON, problem_body
from acula.service.logging import request_id_var

log = logging.getLogger("acula.access")
REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class ProblemH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request heads, parse failures answered as problem+json
    (pass the class as ``http=``; ``header_timeout_s`` is set on the class by :func:`with_header_timeout`)."""

    header_timeout_s = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # still (or again) waiting for a complete request head
            self._arm_head_timer()
        else:
            self._disarm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:  # a head was started and never finished: say why before closing
            detail = f"no complete request head within {self.header_timeout_s:g} s"
            self._send_problem("header_timeout", detail)
        else:  # an idle connection: nothing to answer
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size
        if limit is not None and len(self.conn.trailing_data[0]) > limit:  # what h11 buffered unparsed
            self._send_problem("headers_too_large", f"the request line and headers pass {limit} bytes")
        else:
            self._send_problem("bad_request", "the request is not valid HTTP/1.1")

    def _send_problem(self, code: str, detail: str) -> None:
        """Write the problem response straight to the socket and close: no request was parsed, so h11 has
        nothing to answer (and may be in its error state)."""
        self._disarm_head_timer()
        request_id = uuid.uuid4().hex
        document = problem_body(code, detail, request_id)
        status, body = document["status"], json.dumps(document).encode()
        head: list[Any] = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error"))]
        head += [b"content-type: " + PROBLEM_JSON.encode(), b"content-length: %d" % len(body)]
        head += [b"x-request-id: " + request_id.encode(), b"connection: close"]
        token = request_id_var.set(request_id)
        try:
            log.info("request", extra={"route": "unparsed", "status": status, "error_code": code})
        finally:
            request_id_var.reset(token)
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()


def with_header_timeout(seconds: float) -> type[ProblemH11Protocol]:
    """The protocol class with its head deadline set (uvicorn builds one protocol object per connection)."""
    return type("ProblemH11Protocol", (ProblemH11Protocol,), {"header_timeout_s": seconds})
