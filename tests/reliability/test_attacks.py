"""The defects an independent attack on a live ``acula serve`` found (issue 20), each replayed against a real
server on loopback: what the attacker sends, what the server must answer, what a legitimate client sees.

One test per defect, named after what must hold. The classes they belong to are generated in volume by the
fuzzers (``test_fuzz_decode.py``, ``test_fuzz_http.py``, ``test_schemathesis.py``); these are the
reproductions, with the attack's own shape where it matters (slow clients, bombs, disconnects, signals).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from acula.service.api.errors import ERROR_MAP
from tests.reliability.mutations import rate_bomb
from tests.support.audio_cases import (
    REFERENCING_FILES,
    encode,
    mp3_joined,
    scaled_float,
    sine,
    wav_with_block_align,
)
from tests.support.bundles import wav_bytes
from tests.support.doubles import DOUBLES_ARGV, nan_encoder_bundle
from tests.support.rawhttp import (
    closed_by_server,
    connect,
    in_flight,
    metric,
    multipart_body,
    read_response,
    request_head,
    rss_mib,
    upload_head,
    wait_until,
)
from tests.support.server import REPO, LiveServer, serve, serve_checked

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
RECORDING = wav_bytes(3.0)
BODY_DEADLINE_S = 2.0
SLOTS = 4


def _post(server: LiveServer, data: bytes = RECORDING, route: str = "/predict", **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{route}", files={"file": ("x", data, "audio/wav")}, timeout=60, **kwargs)


def _problem(response: httpx.Response, code: str) -> dict:
    assert response.status_code == ERROR_MAP[code][0], response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["instance"] == response.headers["x-request-id"]
    return body


@pytest.fixture(scope="module")
def guarded(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with short deadlines and few slots, started in a folder holding a FIFO named ``evidence``
    (an upload that made the decoder open it would hang the decode)."""
    folder = tmp_path_factory.mktemp("guarded")
    os.mkfifo(folder / "evidence")
    env = {
        "ACULA_BODY_TIMEOUT_S": str(BODY_DEADLINE_S),
        "ACULA_REQUEST_TIMEOUT_S": "5",
        "ACULA_MAX_INFERENCE_REQUESTS": str(SLOTS),
        "ACULA_KEEPALIVE_TIMEOUT_S": "2",
    }
    with serve_checked(tiny_bundle, folder, env=env, cwd=folder) as server:
        yield server


# --- 1. a silent wrong clinical answer ----------------------------------------------------------------------
@pytest.mark.parametrize("container", ["WAV", "AIFF", "CAF", "W64", "RF64"])
@pytest.mark.parametrize("peak", [1e18, 1.9e19, 3.4e38])
def test_finite_but_huge_float_levels_are_refused_not_answered(
    guarded: LiveServer, container: str, peak: float
) -> None:
    """They passed the finiteness check and came back 200 "normal" with null probabilities."""
    body = _problem(_post(guarded, scaled_float(container, peak)), "level_out_of_range")
    assert "full scale" in body["detail"]


def test_an_encoder_answering_nan_is_a_problem_never_a_default_label(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    nan = tmp_path / "nan-switch"
    argv = (*DOUBLES_ARGV, "--nan-file", str(nan))
    with serve(tiny_bundle, tmp_path, argv=argv) as server:
        assert _post(server).status_code == 200
        nan.touch()
        for route in ("/predict", "/embed", "/similar-reports"):
            body = _problem(_post(server, route=route), "invalid_model_output")
            assert "label" not in json.dumps(body) and "normal" not in body["detail"]
        nan.unlink()
        assert _post(server).status_code == 200


def test_a_bundle_whose_encoder_answers_nan_never_becomes_ready(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = nan_encoder_bundle(tiny_bundle, tmp_path / "nan-bundle")
    command = [sys.executable, "-m", "acula", "serve", "--bundle", str(bundle), "--port", "0"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stderr[-2000:]
    assert "encoder.onnx" in done.stderr and "NaN" in done.stderr, done.stderr[-2000:]


# --- 2. slow bodies holding every admission slot ----------------------------------------------------------
def test_trickling_bodies_release_their_slots_within_the_body_deadline(guarded: LiveServer) -> None:
    """Every slot held by a client sending a byte every 0.2 s (never pausing long): before, the pause
    timeout never fired and a legitimate client got 503 for as long as the attacker liked."""
    tricklers = [connect(guarded) for _ in range(SLOTS)]
    started = time.monotonic()
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        payload = RECORDING[1000:]
        for index in range(len(payload)):
            if stop.is_set():
                return
            try:
                sock.sendall(payload[index : index + 1])
            except OSError:
                return
            time.sleep(0.2)

    try:
        for sock in tricklers:
            sock.sendall(upload_head(len(RECORDING) + 200) + RECORDING[:1000])
        threads = [threading.Thread(target=trickle, args=(sock,), daemon=True) for sock in tricklers]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: in_flight(guarded) >= SLOTS)
        _problem(_post(guarded), "overloaded")  # the attack works: every slot is held
        held = []
        for sock in tricklers:
            status, _, body = read_response(sock)
            held.append(time.monotonic() - started)
            assert status == 408 and b"body_timeout" in body
            assert closed_by_server(sock)
        assert max(held) < BODY_DEADLINE_S + 3.0, held  # bounded by the deadline, not by the client
        assert _post(guarded).status_code == 200  # and the slots are free again
    finally:
        stop.set()
        for sock in tricklers:
            sock.close()


# --- 3. the sample-rate bomb --------------------------------------------------------------------------------
def test_sixteen_concurrent_rate_bombs_stay_within_the_memory_bound(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """16 FLACs at 384 kHz, half declaring 599 s, half with their length unset (so only decoding can tell):
    before, each cost +1.75 GB and 16 at once peaked at 4.25 GB. Now the declared ones are refused from the
    header, the others at the sample budget, resampled as they decode; a legitimate client is answered."""
    declared, unset = rate_bomb(declared=True), rate_bomb(declared=False)
    with serve(tiny_bundle, tmp_path) as server:
        assert _post(server).status_code == 200
        baseline = rss_mib(server.process.pid)
        bombs = [declared, unset] * 8
        with ThreadPoolExecutor(max_workers=17) as pool:
            answers = list(pool.map(lambda data: _post(server, data), bombs))
            legitimate = _post(server)
        peak = rss_mib(server.process.pid, "VmHWM")
        codes = {response.json()["code"] for response in answers}
        assert codes == {"too_many_samples"}, codes
        assert legitimate.status_code == 200, legitimate.text
    assert peak - baseline < 400, f"peak {peak:.0f} MiB from {baseline:.0f} MiB"


def test_a_request_waiting_past_its_deadline_gets_504_never_a_late_200(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """One decode worker kept busy by bombs: a legitimate upload queued behind them is answered within
    its deadline (3 s here), with a 200 or a 504; before, it waited 80 s for a 200."""
    env = {"ACULA_DECODE_WORKERS": "1", "ACULA_REQUEST_TIMEOUT_S": "3", "ACULA_BODY_TIMEOUT_S": "2"}
    unset = rate_bomb(declared=False)
    with serve(tiny_bundle, tmp_path, env=env) as server:

        def timed(data: bytes) -> tuple[int, float]:
            started = time.monotonic()
            response = _post(server, data)
            return response.status_code, time.monotonic() - started

        with ThreadPoolExecutor(max_workers=8) as pool:
            bombs = [pool.submit(timed, unset) for _ in range(6)]
            time.sleep(0.3)
            status, seconds = timed(RECORDING)
            answers = [future.result() for future in bombs]
        assert status in (200, 504) and seconds < 3.0 + 1.5, (status, seconds)
        assert all(code in (413, 504) and took < 3.0 + 1.5 for code, took in answers), answers
        assert _post(server).status_code == 200  # the worker is free again


# --- 4. authentication fails open -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("keys", "file_text", "named"),
    [
        (None, "# rotated 2026-11\n\n", "ACULA_API_KEYS_FILE"),
        (None, "", "ACULA_API_KEYS_FILE"),
        (" , ", None, "ACULA_API_KEYS"),
        (None, "caf\u00e9\n", "ACULA_API_KEYS_FILE"),
    ],
    ids=["comments-only-file", "empty-file", "separators-only", "non-ascii-key"],
)
def test_configured_but_empty_keys_refuse_to_start(
    tiny_bundle: Path, tmp_path: Path, keys: str | None, file_text: str | None, named: str
) -> None:
    env = {**os.environ}
    if keys is not None:
        env["ACULA_API_KEYS"] = keys
    if file_text is not None:
        (tmp_path / "keys").write_text(file_text, encoding="utf-8")
        env["ACULA_API_KEYS_FILE"] = str(tmp_path / "keys")
    command = [sys.executable, "-m", "acula", "serve", "--bundle", str(tiny_bundle), "--port", "0"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and named in done.stderr, done.stderr[-2000:]


# --- 5. an upload that makes the decoder open local files ---------------------------------------------------
@pytest.mark.parametrize("kind", sorted(REFERENCING_FILES))
def test_an_upload_naming_local_files_never_makes_the_server_open_them(
    guarded: LiveServer, kind: str
) -> None:
    data = REFERENCING_FILES[kind].format(name="evidence").encode()
    try:
        response = httpx.post(
            f"{guarded.url}/predict", content=data, headers={"content-type": "audio/wav"}, timeout=5
        )
    except httpx.TimeoutException:
        pytest.fail(f"the {kind} upload made the decoder open the FIFO it names")
    _problem(response, "not_audio")
    with pytest.raises(OSError):  # no reader has the FIFO open, nor is one waiting to
        os.close(os.open(Path(guarded.log_path).parent / "evidence", os.O_WRONLY | os.O_NONBLOCK))


# --- 7. client disconnects counted as server errors -------------------------------------------------------
def test_clients_hanging_up_mid_upload_are_499_at_info_not_500(guarded: LiveServer) -> None:
    before = metric(guarded, 'acula_failures_total{code="client_closed"}')
    for _ in range(5):
        with connect(guarded) as sock:
            sock.sendall(upload_head(len(RECORDING) + 200) + RECORDING[:5000])
            time.sleep(0.05)
    assert wait_until(lambda: in_flight(guarded) == 0)
    assert metric(guarded, 'acula_failures_total{code="client_closed"}') - before == 5
    assert metric(guarded, 'acula_failures_total{code="internal"}') == 0
    assert (
        metric(guarded, 'acula_request_duration_seconds_count{method="POST",route="/predict",status="500"}')
        == 0
    )
    lines = [json.loads(line) for line in guarded.logs().splitlines() if line.startswith("{")]
    closed = [line for line in lines if line.get("error_code") == "client_closed"]
    assert len(closed) >= 5 and all(line["level"] == "info" and line["status"] == 499 for line in closed)


def test_a_client_that_uploads_and_hangs_up_is_499_and_its_work_is_dropped(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """A whole upload, then the client goes away while its windows wait 3 s for a batch: counted as a client
    disconnect at once, and the batch never computes its windows (nobody would read the answer)."""
    env = {"ACULA_MAX_WAIT_MS": "3000", "ACULA_MAX_BATCH_SIZE": "64"}
    with serve(tiny_bundle, tmp_path, env=env) as server:
        body = multipart_body(RECORDING)
        with connect(server) as sock:
            sock.sendall(request_head(len(body)) + body)
            time.sleep(0.5)  # decoded, waiting in the batcher
        closed = 'acula_failures_total{code="client_closed"}'
        assert wait_until(lambda: metric(server, closed) == 1, timeout=2)
        time.sleep(3.5)  # past the batch's wait: its windows were dropped, not computed
        assert metric(server, "acula_windows_total") == 0
        assert _post(server).status_code == 200 and metric(server, "acula_windows_total") > 0
        assert metric(server, 'acula_failures_total{code="internal"}') == 0


# --- 8. the body read before the key is checked -----------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(tiny_bundle, tmp_path_factory.mktemp("keyed"), env={"ACULA_API_KEYS": "k-1"}) as server:
        yield server


@pytest.mark.parametrize("route", ["/similar-reports", "/predict", "/embed"])
def test_an_unauthenticated_upload_is_refused_before_its_body(keyed: LiveServer, route: str) -> None:
    """Headers of a 45 MB upload and nothing else: 401 at once (before: 408 after 30 s on
    /similar-reports, whose form was parsed and spooled to /tmp first)."""
    with connect(keyed, timeout=5) as sock:
        sock.sendall(upload_head(45_000_000, path=route))
        started = time.monotonic()
        status, headers, body = read_response(sock)
    assert status == 401 and time.monotonic() - started < 2.0
    assert headers["content-type"] == "application/problem+json" and b"unauthorized" in body
    assert _post(keyed, route=route, headers={"X-API-Key": "k-1"}).status_code == 200


# --- 9. one huge header stalls the event loop --------------------------------------------------------------
def test_oversized_headers_get_431_problem_json_and_the_loop_stays_responsive(guarded: LiveServer) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # up to 4 MB, until the server stops reading
                sock.sendall(b"a" * 65536)
                started = time.monotonic()
                assert httpx.get(f"{guarded.url}/healthz", timeout=5).status_code == 200
                assert time.monotonic() - started < 1.0
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            status, headers, body = read_response(sock)
        except ConnectionError:
            status = 0  # a reset after the 431 was written: the size limit still held (checked below)
        if status:
            assert status == 431 and headers["content-type"] == "application/problem+json"
            assert json.loads(body)["code"] == "headers_too_large"
    many = {f"x-h{i}": "v" for i in range(150)}
    _problem(httpx.get(f"{guarded.url}/healthz", headers=many, timeout=5), "headers_too_large")


def test_a_stalled_or_idle_request_head_is_closed_at_the_head_deadline(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """Slow headers hold no slot, but uvicorn alone kept such a connection for ever (its keep-alive timer
    stops at the first byte); the service closes it after ACULA_HEADER_TIMEOUT_S."""
    env = {"ACULA_HEADER_TIMEOUT_S": "1"}
    with serve(tiny_bundle, tmp_path, env=env) as server, connect(server) as idle, connect(server) as stalled:
        stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        status, _, body = read_response(stalled)
        assert status == 408 and json.loads(body)["code"] == "header_timeout"
        assert closed_by_server(stalled) and closed_by_server(idle, timeout=5)
        assert time.monotonic() - started < 5


# --- 10. a failed drain exits 0 -----------------------------------------------------------------------------
def test_a_drain_that_cuts_requests_exits_non_zero_and_says_how_many(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    env = {"ACULA_GRACEFUL_SHUTDOWN_S": "1"}
    with serve(tiny_bundle, tmp_path, env=env) as server, connect(server) as stuck:
        stuck.sendall(upload_head(len(RECORDING) + 200) + RECORDING[:1000])  # then nothing
        assert wait_until(lambda: in_flight(server) >= 1)
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=30)
    assert code == 1, server.logs()[-2000:]
    assert "1 request(s) were cut at shutdown" in server.logs()


def test_a_complete_drain_exits_0(tiny_bundle: Path, tmp_path: Path) -> None:
    with serve(tiny_bundle, tmp_path) as server:
        assert _post(server).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0, server.logs()[-2000:]


# --- 11. the smaller ones --------------------------------------------------------------------------------
def test_the_api_description_is_labelled_by_its_route(guarded: LiveServer) -> None:
    for path in ("/docs", "/openapi.json"):
        assert httpx.get(f"{guarded.url}{path}", timeout=10).status_code == 200
        assert metric(guarded, f'acula_request_duration_seconds_count{{method="GET",route="{path}"') >= 1


def test_requests_the_http_parser_refuses_are_problem_json(guarded: LiveServer) -> None:
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"):
        with connect(guarded) as sock:
            sock.sendall(garbage)
            status, headers, body = read_response(sock)
        assert status == 400 and headers["content-type"] == "application/problem+json"
        assert json.loads(body)["code"] == "bad_request" and headers["x-request-id"]


def test_an_invalid_traceparent_is_neither_echoed_nor_logged(guarded: LiveServer) -> None:
    junk = "00-" + "f" * 20_000
    response = httpx.get(f"{guarded.url}/nowhere", headers={"traceparent": junk}, timeout=5)
    assert response.status_code == 404 and "traceparent" not in response.headers
    assert junk not in guarded.logs()
    valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert httpx.get(f"{guarded.url}/healthz", headers={"traceparent": valid}).headers["traceparent"] == valid


def test_an_mp3_whose_rate_changes_is_refused_saying_so(guarded: LiveServer) -> None:
    body = _problem(_post(guarded, mp3_joined((16000, 3.0), (8000, 3.0))), "format_changes")
    assert "8000 Hz" in body["detail"] and "16000 Hz" in body["detail"]


def test_a_wav_with_block_align_0_is_analysed_in_full(guarded: LiveServer) -> None:
    response = _post(guarded, wav_with_block_align(encode(sine(seconds=3.0, rate=8000), 8000), 0))
    assert response.status_code == 200 and response.json()["input"]["duration_s"] == pytest.approx(3.0)


def test_nothing_above_left_a_request_in_flight_or_a_500(guarded: LiveServer) -> None:
    assert wait_until(lambda: in_flight(guarded) == 0)
    assert metric(guarded, 'acula_failures_total{code="internal"}') == 0
