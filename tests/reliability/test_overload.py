"""Overload against a real ``acula serve`` on loopback: excess uploads get a fast 503, never a long wait.

``AdmissionMiddleware`` enters the runtime's one admission (``ACULA_MAX_INFERENCE_REQUESTS``), counting
POSTs from their headers to their response. To make "the service is full" deterministic rather than a race
against a fast tiny model, the test fills every slot with uploads that send their headers and half their
body and then pause (as a slow link would); the flood that follows must be refused at once, while probes
and metrics are still answered, and the service must serve 200s again once the slow uploads have finished.
No assertion depends on how fast the machine is: "at once" means "while the slots are still held", and
"before the body is read" means "to a request that never sends its body".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from acula.service.core.admission import Admission
from acula.service.core.errors import Overloaded
from tests.support.bundles import wav_bytes
from tests.support.rawhttp import connect, metric, multipart_body, read_response, request_head
from tests.support.server import LiveServer, serve_checked

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
RECORDING = wav_bytes(3.0)
LIMIT = 3
BOUNDARY = "0verl0ad"
BODY = multipart_body(RECORDING, BOUNDARY)


def test_admission_is_one_count_with_one_limit() -> None:
    admission = Admission(2)
    admission.enter()
    admission.enter()
    with pytest.raises(Overloaded):
        admission.enter()
    admission.leave()
    admission.enter()
    assert admission.active == 2


@pytest.fixture(scope="module")
def limited(tiny_bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "ACULA_MAX_INFERENCE_REQUESTS": str(LIMIT),
        "ACULA_BODY_TIMEOUT_S": "120",
        "ACULA_REQUEST_TIMEOUT_S": "180",
        "ACULA_RETRY_AFTER_S": "2",
    }
    with serve_checked(tiny_bundle, tmp_path_factory.mktemp("overload"), env=env) as server:
        yield server


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
    refused_before = metric(limited, 'acula_failures_total{code="overloaded"}')

    # Fill every admission slot with an upload that has sent its headers and half its body, then pauses.
    slow = [connect(limited, timeout=120) for _ in range(LIMIT)]
    half = len(BODY) // 2
    try:
        for sock in slow:
            sock.sendall(request_head(len(BODY), BOUNDARY) + BODY[:half])
        for _ in range(600):  # until the server has admitted all of them (no time limit: the test's timeout)
            if metric(limited, "acula_requests_in_flight") - 1 >= LIMIT:  # minus this scrape
                break
            time.sleep(0.05)
        assert metric(limited, "acula_requests_in_flight") - 1 >= LIMIT

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
        with connect(limited, timeout=120) as sock:
            sock.sendall(request_head(len(BODY), BOUNDARY))
            status, headers, body = read_response(sock)
        assert status == 503 and headers["retry-after"] == "2" and b"overloaded" in body

        # Probes and metrics are never counted nor refused.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(f"{url}{path}", timeout=30).status_code == 200, path
        refused = metric(limited, 'acula_failures_total{code="overloaded"}') - refused_before
        assert refused == len(responses) + 1
        labelled = 'acula_request_duration_seconds_count{method="POST",route="/predict",status="503"}'
        assert metric(limited, labelled) == refused  # under its route, not "unmatched"

        # The held uploads were admitted before the flood: they finish with 200.
        for sock in slow:
            sock.sendall(BODY[half:])
        for sock in slow:
            status, _, body = read_response(sock)
            assert status == 200, body[:300]
    finally:
        for sock in slow:
            sock.close()

    # Capacity is back: the next uploads are served, and nothing is left counted as in flight.
    assert [_status(url) for _ in range(LIMIT + 2)] == [200] * (LIMIT + 2)
    with ThreadPoolExecutor(max_workers=LIMIT) as pool:
        assert list(pool.map(_status, [url] * LIMIT)) == [200] * LIMIT
    assert metric(limited, "acula_requests_in_flight") - 1 == 0
