"""Overload against a real ``acula serve`` on loopback: excess uploads get a fast 503, never a long wait.

``AdmissionMiddleware`` (``ACULA_MAX_CONCURRENCY``; 0, the default, means ``ACULA_MAX_QUEUE``) counts
POSTs from their headers to their response. To make "the service is full" deterministic rather than a race
against a fast tiny model, the test fills every slot with uploads that send their headers and half their
body and then pause (as a slow link would); the flood that follows must be refused at once, while probes
and metrics are still answered, and the service must serve 200s again once the slow uploads have finished.
No assertion depends on how fast the machine is: "at once" means "while the slots are still held", and
"before the body is read" means "to a request that never sends its body".
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from acula.service.settings import Settings
from tests.support.bundles import wav_bytes
from tests.support.server import LiveServer, serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
RECORDING = wav_bytes(3.0)
LIMIT = 3
BOUNDARY = "0verl0ad"
PART_HEAD = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n'
BODY = (
    (PART_HEAD + "Content-Type: audio/wav\r\n\r\n").encode() + RECORDING + f"\r\n--{BOUNDARY}--\r\n".encode()
)


def test_the_admission_limit_defaults_to_the_queue_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACULA_MAX_CONCURRENCY", raising=False)
    monkeypatch.setenv("ACULA_MAX_QUEUE", "10")
    assert Settings().max_concurrency == 0
    assert Settings().admission_limit == 10
    monkeypatch.setenv("ACULA_MAX_CONCURRENCY", "7")
    assert Settings().admission_limit == 7


@pytest.fixture(scope="module")
def limited(tiny_bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"ACULA_MAX_CONCURRENCY": str(LIMIT), "ACULA_BODY_TIMEOUT_S": "120", "ACULA_RETRY_AFTER_S": "2"}
    with serve(tiny_bundle, tmp_path_factory.mktemp("overload"), env=env) as server:
        yield server
        assert server.process.poll() is None, server.logs()[-3000:]
    assert "unhandled error" not in server.logs(), server.logs()[-3000:]


def _address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _head(length: int) -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data[:200]!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (ln.split(":", 1) for ln in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _metric(server: LiveServer, prefix: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def _post(url: str) -> httpx.Response | str:
    try:
        return httpx.post(f"{url}/predict", files={"file": ("x", RECORDING, "audio/wav")}, timeout=120)
    except httpx.HTTPError as exc:  # counted, so "every request got an answer" is checked, not assumed
        return type(exc).__name__


def _status(url: str) -> int | str:
    response = _post(url)
    return response if isinstance(response, str) else response.status_code


def test_a_flood_beyond_the_limit_gets_fast_503s_and_the_service_recovers(limited: LiveServer) -> None:
    url = limited.url
    assert _status(url) == 200
    refused_before = _metric(limited, 'acula_failures_total{code="overloaded"}')

    # Fill every admission slot with an upload that has sent its headers and half its body, then pauses.
    slow = [socket.create_connection(_address(limited), timeout=120) for _ in range(LIMIT)]
    half = len(BODY) // 2
    try:
        for sock in slow:
            sock.sendall(_head(len(BODY)) + BODY[:half])
        for _ in range(600):  # until the server has admitted all of them (no time limit: the test's timeout)
            if _metric(limited, "acula_requests_in_flight") - 1 >= LIMIT:  # minus this scrape
                break
            time.sleep(0.05)
        assert _metric(limited, "acula_requests_in_flight") - 1 >= LIMIT

        # A flood of whole uploads from 32 clients at once: every one is answered, with 503 + Retry-After.
        with ThreadPoolExecutor(max_workers=32) as pool:
            flood = list(pool.map(_post, [url] * 48))
        assert all(isinstance(r, httpx.Response) for r in flood), [r for r in flood if isinstance(r, str)]
        responses = [r for r in flood if isinstance(r, httpx.Response)]
        assert [r.status_code for r in responses] == [503] * len(responses)
        for response in responses:
            assert response.headers["retry-after"] == "2"
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["code"] == "overloaded" and problem["status"] == 503
            assert problem["instance"] == response.headers["x-request-id"]

        # Refused before its body is read: a request that sends only its headers still gets the 503.
        with socket.create_connection(_address(limited), timeout=120) as sock:
            sock.sendall(_head(len(BODY)))
            status, headers, body = _read_response(sock)
        assert status == 503 and headers["retry-after"] == "2" and b"overloaded" in body

        # Probes and metrics are never counted nor refused.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(f"{url}{path}", timeout=30).status_code == 200, path
        refused = _metric(limited, 'acula_failures_total{code="overloaded"}') - refused_before
        assert refused == len(responses) + 1
        labelled = 'acula_request_duration_seconds_count{method="POST",route="/predict",status="503"}'
        assert _metric(limited, labelled) == refused  # under its route, not "unmatched"

        # The held uploads were admitted before the flood: they finish with 200.
        for sock in slow:
            sock.sendall(BODY[half:])
        for sock in slow:
            status, _, body = _read_response(sock)
            assert status == 200, body[:300]
    finally:
        for sock in slow:
            sock.close()

    # Capacity is back: the next uploads are served, and nothing is left counted as in flight.
    assert [_status(url) for _ in range(LIMIT + 2)] == [200] * (LIMIT + 2)
    with ThreadPoolExecutor(max_workers=LIMIT) as pool:
        assert list(pool.map(_status, [url] * LIMIT)) == [200] * LIMIT
    assert _metric(limited, "acula_requests_in_flight") - 1 == 0
