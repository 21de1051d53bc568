"""Operations through real ``acula serve`` processes: batching, overload, auth, prefix, graceful shutdown."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.bundles import wav_bytes
from tests.support.server import serve

TWO_SECONDS = wav_bytes(2.0)  # exactly one window of the tiny bundle


def _post_many(url: str, count: int, data: bytes = TWO_SECONDS) -> list[httpx.Response]:
    barrier = threading.Barrier(count)

    def one(_: int) -> httpx.Response:
        with httpx.Client(timeout=30.0) as client:
            barrier.wait()
            return client.post(url, files={"file": ("a.wav", data)})

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


def test_concurrent_requests_are_batched_together(tiny_bundle: Path, tmp_path: Path) -> None:
    env = {"ACULA_MAX_WAIT_MS": "100", "ACULA_MAX_BATCH_SIZE": "16"}
    with serve(tiny_bundle, tmp_path, env) as server:
        responses = _post_many(f"{server.url}/embed", 12)
        assert [r.status_code for r in responses] == [200] * 12
        metrics = httpx.get(f"{server.url}/metrics").text
    batches = _metric(metrics, "acula_batch_size_count")
    single = _metric(metrics, 'acula_batch_size_bucket{le="1.0"}')
    assert _metric(metrics, "acula_windows_total") == 12
    assert batches < 12 and batches - single >= 1, (
        metrics
    )  # at least one batch held windows of several requests


def test_overload_is_503_with_retry_after(tiny_bundle: Path, tmp_path: Path) -> None:
    env = {"ACULA_MAX_INFERENCE_REQUESTS": "2", "ACULA_MAX_WAIT_MS": "400", "ACULA_MAX_BATCH_SIZE": "64"}
    with serve(tiny_bundle, tmp_path, env) as server:
        responses = _post_many(f"{server.url}/predict", 10)
        metrics = httpx.get(f"{server.url}/metrics").text
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "overloaded"
    assert _metric(metrics, 'acula_failures_total{code="overloaded"}') == len(refused)


def test_api_keys_and_root_path(tiny_bundle: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# rotated 2026-11\ngamma-key\n\n")
    env = {
        "ACULA_API_KEYS": "alpha-key, beta-key",
        "ACULA_API_KEYS_FILE": str(key_file),
        "ACULA_ROOT_PATH": "/acula",
    }
    with serve(tiny_bundle, tmp_path, env) as server, httpx.Client(base_url=f"{server.url}/acula") as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200, path  # exempt from auth
        missing = client.get("/v1/model")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["code"] == "unauthorized"
        assert client.get("/v1/model", headers={"X-API-Key": "alpha-key-"}).status_code == 401
        assert client.get("/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/model", headers={"X-API-Key": "alpha-key"}).status_code == 200
        assert client.get("/v1/model", headers={"Authorization": "Bearer beta-key"}).status_code == 200
        upload = {"file": ("a.wav", TWO_SECONDS)}
        assert client.post("/predict", files=upload).status_code == 401
        assert client.post("/predict", files=upload, headers={"X-API-Key": "gamma-key"}).status_code == 200
        spec = client.get("/openapi.json").json()
        assert spec["servers"] == [{"url": "/acula"}]
        assert "/acula/openapi.json" in client.get("/docs").text  # the docs page works behind the prefix
        # a gateway that strips the prefix reaches the same routes
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        metrics = client.get("/metrics").text
    assert 'acula_failures_total{code="unauthorized"} 4.0' in metrics
    assert "alpha-key" not in server.logs() and "gamma-key" not in server.logs()


def test_sigterm_flips_readiness_and_finishes_in_flight_requests(tiny_bundle: Path, tmp_path: Path) -> None:
    env = {"ACULA_MAX_WAIT_MS": "1500", "ACULA_DRAIN_DELAY_S": "1.0", "ACULA_MAX_BATCH_SIZE": "16"}
    with serve(tiny_bundle, tmp_path, env) as server:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_post_many, f"{server.url}/predict", 1) for _ in range(4)]
            time.sleep(0.4)  # the four requests now sit in the batcher, waiting for the batch to fill
            server.terminate()
            time.sleep(0.2)
            ready = httpx.get(f"{server.url}/readyz", timeout=5.0)
            alive = httpx.get(f"{server.url}/healthz", timeout=5.0)
            results = [future.result()[0] for future in futures]
        assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
        assert alive.status_code == 200
        assert [r.status_code for r in results] == [200] * 4
        assert all(r.json()["windows"]["count"] == 1 for r in results)
        try:
            # uvicorn re-raises the captured SIGTERM after a clean shutdown, so the exit is by that signal
            assert server.process.wait(timeout=20) in (0, -signal.SIGTERM)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server did not exit after SIGTERM:\n{server.logs()}")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/healthz", timeout=2.0)
        logs = server.logs()
        assert "Application shutdown complete" in logs and "Traceback" not in logs
