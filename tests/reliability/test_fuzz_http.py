"""Hostile clients of a live ``acula serve`` (real uvicorn, real sockets): only 200, 4xx or 503, never a hang.

The decoder fuzzers (``test_fuzz_decode.py``) give volume; these inputs prove the same inputs cannot reach a
500 through the HTTP layer (multipart parsing, error mapping, the batcher, the probes), that each refusal is
problem+json with a documented code, and that the server is alive and serving afterwards. Beyond mutated
recordings: raw requests with malformed and oversized headers and header parameters, clients hanging up at
every byte of an upload, and clients that trickle or stall, which must hold a slot no longer than the
deadlines.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acula.service.api.errors import ERROR_MAP
from tests.reliability.mutations import GENERATED, WAV_FIELDS, flac_streaminfo, flip_bits, nan_wav, wav_field
from tests.support.rawhttp import (
    connect,
    in_flight,
    metric,
    multipart_body,
    read_response,
    request_head,
    wait_until,
)
from tests.support.server import LiveServer, serve_checked

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MUTATIONS = ["bits", "cut", "wav_field", "flac_info", "nan", "none"]


@pytest.fixture(scope="module")
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30.0) as session:
        yield session


def mutate(data: st.DataObject, seeds: dict[str, bytes]) -> bytes:
    seed = seeds[data.draw(st.sampled_from(sorted(seeds)), label="seed")]
    kind = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    if kind == "bits":
        positions = data.draw(st.lists(st.floats(0, 0.2), min_size=1, max_size=8))
        return flip_bits(seed, positions, data.draw(st.lists(st.integers(0, 7), min_size=1)))
    if kind == "cut":
        return seed[: data.draw(st.integers(1, len(seed)))]
    if kind == "wav_field" and seed[:4] == b"RIFF":
        return wav_field(seed, data.draw(st.sampled_from(WAV_FIELDS)), data.draw(st.integers(0, 2**32 - 1)))
    if kind == "flac_info" and seed[:4] == b"fLaC":
        return flac_streaminfo(
            seed,
            rate=data.draw(st.integers(0, 2**20 - 1)),
            channels=data.draw(st.integers(1, 8)),
            total=data.draw(st.integers(0, 2**36 - 1)),
        )
    if kind == "nan":
        return nan_wav(share=data.draw(st.floats(0.001, 1.0)))
    return seed


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_uploads_get_200_or_a_documented_4xx(
    client: httpx.Client, seeds: dict[str, bytes], data: st.DataObject
) -> None:
    body = mutate(data, seeds)
    GENERATED["http"] += 1
    mime = data.draw(st.sampled_from(["audio/wav", "audio/flac", "application/octet-stream", "audio/mpeg"]))
    response = client.post("/predict", files={"file": ("x", body, mime)})
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] in ERROR_MAP and ERROR_MAP[problem["code"]][0] == response.status_code
    else:
        assert response.json()["windows"]["count"] >= 1


def test_the_server_still_serves_after_the_fuzzing(client: httpx.Client, seeds: dict[str, bytes]) -> None:
    """Runs after the fuzzer in this module (pytest keeps file order): healthy, ready, and answering."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.post("/predict", files={"file": ("x", seeds["flac-8000"], "audio/flac")}).status_code == 200


# --- classes from issue 20: headers and their parameters, slow and stalled clients, disconnects -----------
HEADER_NAMES = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "x-request-id",
    "traceparent",
    "x-api-key",
    "authorization",
    "expect",
    "connection",
    "host",
    "x-client-id",
    "accept",
]
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=24)
BOUNDARY = st.one_of(
    st.text(alphabet="ab09'()+_,-./:=? ", min_size=0, max_size=80),
    st.integers(0, 20_000).map(lambda n: "b" * n),
    st.just('"quoted boundary"'),
)
CONTENT_TYPE = st.one_of(
    st.builds(lambda b: f"multipart/form-data; boundary={b}", BOUNDARY),
    st.builds(lambda b, c: f"multipart/form-data; charset={c}; boundary={b}; boundary=x", BOUNDARY, TOKEN),
    st.sampled_from(["audio/wav", "audio/x-anything; q=0.1", "application/octet-stream", "text/plain", ""]),
    st.sampled_from(
        ["application/x-www-form-urlencoded", "multipart/mixed; boundary=x", "multipart/form-data"]
    ),
)
HEADER_VALUE = st.one_of(
    st.binary(max_size=64),
    st.integers(0, 70_000).map(lambda n: b"v" * n),  # past ACULA_MAX_HEADER_BYTES (32 KiB) too
    st.sampled_from([b"-1", b"18446744073709551616", b"1, 2", b"chunked", b"gzip, chunked", b"100-continue"]),
    CONTENT_TYPE.map(str.encode),
)


def exchange(
    server: LiveServer, data: bytes, has_body: bool = True, timeout: float = 20.0
) -> tuple[int, dict[str, str], bytes] | None:
    """Send ``data``, close the sending side, read one response; None when the server closed without one
    (it may, when the request was cut short: the client hung up)."""
    with connect(server, timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server refused and closed while we were still sending
            pass
        try:
            return read_response(sock, has_body)
        except (ConnectionError, OSError):
            return None


def assert_served_or_refused(answer: tuple[int, dict[str, str], bytes] | None) -> None:
    if answer is None:
        return
    status, headers, body = answer
    assert status < 500 or status == 503, (status, body[:300])
    if status >= 400:
        assert headers.get("content-type") == "application/problem+json", (status, headers, body[:200])
    if status >= 400 and body:  # (no body: the answer to a HEAD request)
        problem = json.loads(body)
        assert problem["code"] in ERROR_MAP and ERROR_MAP[problem["code"]][0] == status, problem


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.data(),
    method=st.sampled_from(["POST", "GET", "PUT", "HEAD", "OPTIONS", "P\x00ST", "G E T"]),
    path=st.one_of(
        st.sampled_from(["/predict", "/embed", "/similar-reports", "/healthz", "/metrics", "/v1/model"]),
        st.builds(lambda n: "/predict?tasks=" + "x," * n, st.integers(0, 20_000)),
        st.sampled_from(["/%00", "/%zz", "//predict", "/predict/../metrics", "*", "http://h/predict"]),
    ),
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", ""]),
    headers=st.lists(st.tuples(st.one_of(st.sampled_from(HEADER_NAMES), TOKEN), HEADER_VALUE), max_size=12),
    many=st.sampled_from([0, 0, 0, 50, 101, 300]),
)
def test_malformed_and_oversized_headers_get_a_documented_answer(
    live: LiveServer,
    seeds: dict[str, bytes],
    data: st.DataObject,
    method: str,
    path: str,
    version: str,
    headers: list[tuple[str, bytes]],
    many: int,
) -> None:
    """Raw requests no HTTP library would build: broken request lines, header values with control bytes,
    oversized values and too many headers, contradictory lengths and encodings, multipart parameters of
    every shape. Answered (400, 413, 415, 422, 431...) as problem+json, or the connection closed; never a
    5xx."""
    GENERATED["http"] += 1
    body = mutate(data, seeds)
    lines = [f"{method} {path} {version}".encode(), b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + value for name, value in headers]
    lines += [f"x-filler-{i}: v".encode() for i in range(many)]
    if data.draw(st.booleans(), label="content-length"):
        lines.append(f"Content-Length: {len(body)}".encode())
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    assert_served_or_refused(exchange(live, request, has_body=method != "HEAD"))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), cut=st.floats(0.0, 1.0), reset=st.booleans(), read=st.integers(0, 64))
def test_clients_hanging_up_anywhere_leave_no_500_and_nothing_in_flight(
    live: LiveServer, seeds: dict[str, bytes], data: st.DataObject, cut: float, reset: bool, read: int
) -> None:
    """A whole upload cut anywhere (request line, headers, body, after it while the answer is computed,
    or with a few bytes of the answer read), ended by FIN or by RST."""
    GENERATED["http"] += 1
    body = multipart_body(seeds[data.draw(st.sampled_from(sorted(seeds)), label="seed")])
    request = request_head(len(body)) + body
    with connect(live) as sock:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(request[: int(cut * len(request))])
        if cut == 1.0 and read:
            with contextlib.suppress(OSError):
                sock.recv(read)


def test_hang_ups_left_nothing_behind(live: LiveServer) -> None:
    """Runs after the hang-up fuzzer (file order): every cut request has ended, none as a server error."""
    assert wait_until(lambda: in_flight(live) == 0, timeout=60)
    assert metric(live, 'acula_failures_total{code="internal"}') == 0
    assert metric(live, "acula_request_duration_seconds_count{") > 0
    assert 'status="500"' not in httpx.get(f"{live.url}/metrics", timeout=10).text


@pytest.fixture(scope="module")
def impatient(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "ACULA_HEADER_TIMEOUT_S": "1",
        "ACULA_BODY_TIMEOUT_S": "1",
        "ACULA_REQUEST_TIMEOUT_S": "2",
        "ACULA_MAX_INFERENCE_REQUESTS": "8",
    }
    with serve_checked(tiny_bundle, tmp_path_factory.mktemp("impatient"), env=env) as server:
        yield server


SCHEDULE = st.tuples(
    st.floats(0.0, 1.0),  # share of the request sent at once
    st.sampled_from([0.0, 0.05, 0.2, 0.5]),  # seconds between trickled bytes (0: stall)
    st.integers(1, 64),  # bytes per trickle
)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(schedules=st.lists(SCHEDULE, min_size=8, max_size=8))
def test_slow_and_stalled_clients_hold_a_slot_no_longer_than_the_deadlines(
    impatient: LiveServer, seeds: dict[str, bytes], schedules: list[tuple[float, float, int]]
) -> None:
    """Eight clients at once, each sending part of an upload (its head or its body) and then trickling or
    stalling: each is answered (408, or a 200 if it finished in time) or closed within the deadlines
    (head 1 s, request 2 s here), whatever it does, and then a legitimate upload is served."""
    GENERATED["http"] += len(schedules)
    body = multipart_body(seeds["flac-8000"])
    request = request_head(len(body)) + body

    def slow_client(schedule: tuple[float, float, int]) -> float:
        """Seconds until the client had a whole response or the server closed the connection."""
        share, pause, chunk = schedule
        started = time.monotonic()
        received = b""
        with connect(impatient, timeout=10) as sock:
            sent = max(1, int(share * len(request)))
            sock.sendall(request[:sent])
            sock.settimeout(pause or 10)
            while time.monotonic() - started < 30 and not complete_response(received):
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    if sent < len(request) and pause:
                        with contextlib.suppress(OSError):
                            sock.sendall(request[sent : sent + chunk])
                        sent += chunk
                    continue
                except OSError:
                    break
                if not data:
                    break
                received += data
        return time.monotonic() - started

    with ThreadPoolExecutor(max_workers=len(schedules)) as pool:
        held = list(pool.map(slow_client, schedules))
    assert max(held) < 2.0 + 2.0, held  # REQUEST_TIMEOUT_S, plus scheduling slack on a busy machine
    assert wait_until(lambda: in_flight(impatient) == 0, timeout=10)
    assert client_post(impatient, seeds["flac-8000"]).status_code == 200


def complete_response(data: bytes) -> bool:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    lengths = [
        line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    ]
    return len(body) >= int(lengths[0]) if lengths else True


def client_post(server: LiveServer, recording: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", files={"file": ("x", recording, "audio/flac")}, timeout=30)
