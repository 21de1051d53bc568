"""The HTTP/1.1 protocol the service runs on: uvicorn's h11 protocol, with the server's own limits, answering
what it refuses as problem+json.

Why h11 rather than uvicorn's default httptools: httptools takes request headers of any size and count, and
joins a header's pieces as they arrive, so one 200 MB header kept the event loop (and ``/healthz``) busy for
seconds. h11 refuses a request line plus headers larger than ``h11_max_incomplete_event_size``, a limit
uvicorn exposes, before buffering more; the service sets it to ``ACULA_MAX_HEADER_BYTES`` and counts headers
itself (``RequestContextMiddleware``, 431). Parsing in Python costs about 0.2 ms per upload request on the
2-core reference machine, a percent or two of a request's cost (docs/PERFORMANCE.md).

uvicorn answers a request it cannot parse before any application code runs, with ``text/plain``;
:class:`ProblemH11Protocol` overrides that one method (``send_400_response``, which uvicorn's protocols call
for every parse failure) to answer ``400 bad_request``, or ``431 headers_too_large`` when the headers passed
the size limit, as every other error: ``application/problem+json`` with a request id, and logged.
"""

from __future__ import annotations

import json
import logging
import uuid

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from acula.service.api.errors import PROBLEM_JSON, problem_body
from acula.service.logging import request_id_var

log = logging.getLogger("acula.access")


class ProblemH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; parse failures answered as problem+json (pass the class as ``http=``)."""

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size
        pending = len(self.conn.trailing_data[0])  # what h11 buffered and could not parse
        if limit is not None and pending > limit:
            code, detail = "headers_too_large", f"the request line and headers pass {limit} bytes"
        else:
            code, detail = "bad_request", "the request is not valid HTTP/1.1"
        request_id = uuid.uuid4().hex
        document = problem_body(code, detail, request_id)
        status, body = document["status"], json.dumps(document).encode()
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"connection", b"close"),
        ]
        token = request_id_var.set(request_id)
        try:
            log.info("request", extra={"route": "unparsed", "status": status, "error_code": code})
        finally:
            request_id_var.reset(token)
        try:
            response = h11.Response(status_code=status, headers=headers)
            for event in (response, h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # h11 cannot answer in this state: close without a response
            pass
        self.transport.close()
