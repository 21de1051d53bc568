"""The deployment's parts, run for real on loopback from Debian's packages: the service under uvicorn with a
tiny real bundle, nginx with the project's gateway config in front of it over TLS, and Prometheus with the
project's scrape config and alert rules scraping it. No Docker engine: the same configs the images use."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy.tools import (
    DOCKER,
    make_dev_certs,
    nginx_command,
    render_prometheus_config,
    require_binary,
    write_nginx_config,
)
from tests.support.bundles import wav_bytes
from tests.support.server import LiveServer, free_port, running, serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "/acula"
# A small gateway cap, so both sides of it are tested with real bodies in a fraction of a second; not nginx's
# default of 1m, so the test notices when the configured cap is lost.
GATEWAY_MAX_BODY = "2m"
MAX_BODY_BYTES = 2 * 1024 * 1024


@dataclass
class Gateway:
    url: str
    port: int
    tls: ssl.SSLContext
    work: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.tls, timeout=30.0)


@pytest.fixture(scope="module")
def service(tiny_bundle: Path, tmp_path_factory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("service")
    with serve(tiny_bundle, tmp, env={"ACULA_ROOT_PATH": PREFIX, "ACULA_LOG_JSON": "true"}) as server:
        yield server


def tls_ready(port: int, context: ssl.SSLContext) -> bool:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
            context.wrap_socket(raw, server_hostname="localhost"),
        ):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def gateway(service: LiveServer, tmp_path_factory) -> Iterator[Gateway]:
    nginx = require_binary("nginx")
    work = tmp_path_factory.mktemp("gateway")
    certs = make_dev_certs(work / "certs")
    port = free_port()
    upstream = service.url.removeprefix("http://")
    main = write_nginx_config(work / "nginx", upstream, f"127.0.0.1:{port}", certs, GATEWAY_MAX_BODY)
    check = subprocess.run(nginx_command(nginx, main, "-t"), capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    # Real certificate verification against the dev certificate, not verify=False.
    context = ssl.create_default_context(cafile=str(certs / "tls.crt"))
    with running(nginx_command(nginx, main), work / "nginx.out", lambda: tls_ready(port, context)):
        yield Gateway(f"https://localhost:{port}", port, context, work / "nginx")


def upload(seconds: float = 3.0) -> dict:
    return {"file": ("recording.wav", wav_bytes(seconds), "audio/wav")}


def service_log_lines(service: LiveServer) -> list[dict]:
    lines = []
    for line in service.logs().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def wait_for_log(service: LiveServer, request_id: str, timeout: float = 10.0) -> list[dict]:
    """The service's log lines for ``request_id``; the access line is written just after the response."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in service_log_lines(service) if line.get("request_id") == request_id]
        if any(line.get("logger") == "acula.access" for line in lines):
            return lines
        assert time.monotonic() < deadline, f"no access log line for {request_id}:\n{service.logs()[-2000:]}"
        time.sleep(0.1)


def test_predict_through_the_gateway_over_tls(gateway: Gateway):
    with gateway.client() as client:
        reply = client.post(f"{PREFIX}/predict", files=upload())
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"]["name"] == "acula-tiny"  # the service's own answer, passed through
    assert set(body["tasks"]) == {"sound", "disease", "age"}
    assert body["input"]["duration_s"] == pytest.approx(3.0, abs=0.01)
    assert reply.headers["strict-transport-security"].startswith("max-age=")
    assert "/" not in reply.headers.get("server", ""), "server_tokens off: no version disclosed"


def test_request_id_is_kept_generated_and_reaches_the_service(gateway: Gateway, service: LiveServer):
    with gateway.client() as client:
        trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        kept = client.get(
            f"{PREFIX}/healthz", headers={"X-Request-ID": "ward-7.req-0001", "traceparent": trace}
        )
        generated = client.get(f"{PREFIX}/healthz")
        unsafe = client.get(f"{PREFIX}/healthz", headers={"X-Request-ID": "bad id <script>"})
        # An error from the service names the request id it saw in its problem+json `instance`.
        failed = client.post(
            f"{PREFIX}/predict",
            files={"file": ("x.wav", b"not audio at all" * 64, "audio/wav")},
            headers={"X-Request-ID": "ward-7.req-0002", "X-Client-ID": "spoofed-client"},
        )
    assert kept.headers.get_list("x-request-id") == ["ward-7.req-0001"]
    assert kept.headers["traceparent"] == trace  # passed through the gateway; the service echoes it
    assert len(generated.headers.get_list("x-request-id")) == 1
    assert len(generated.headers["x-request-id"]) == 32  # nginx's $request_id: 32 hex digits
    assert unsafe.headers["x-request-id"] != "bad id <script>"
    assert failed.status_code in (415, 422), failed.text
    assert failed.headers["content-type"].startswith("application/problem+json")
    assert failed.headers["x-request-id"] == "ward-7.req-0002"
    assert failed.json()["instance"] == "ward-7.req-0002"
    # The service logged that request under the same id, and the gateway dropped the client's X-Client-ID
    # (without mTLS there is no verified client identity to forward).
    logged = wait_for_log(service, "ward-7.req-0002")
    assert all(line.get("client_id") in (None, "") for line in logged)


def test_oversized_upload_is_refused_at_the_gateway(gateway: Gateway, service: LiveServer):
    # Just under the cap (and over nginx's default 1m): a 100 s recording goes through and is predicted.
    just_under = upload(seconds=100.0)
    assert 1024 * 1024 < len(just_under["file"][1]) < MAX_BODY_BYTES - 4096
    with gateway.client() as client:
        assert client.post(f"{PREFIX}/predict", files=just_under).status_code == 200
    too_big = b"\0" * (MAX_BODY_BYTES + 1)
    # Declared length: nginx answers from the headers alone.
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw,
        gateway.tls.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        conn.sendall(
            f"POST {PREFIX}/predict HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: big-1\r\n"
            f"Content-Type: audio/wav\r\nContent-Length: {len(too_big)}\r\n\r\n".encode()
        )
        received = b""
        while b"\r\n\r\n" not in received and (chunk := conn.recv(65536)):
            received += chunk
        head = received.decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    assert "x-request-id: big-1" in head.lower()
    # No declared length (chunked): nginx counts while reading and stops at the cap.
    with gateway.client() as client:
        reply = client.post(
            f"{PREFIX}/predict",
            content=iter([too_big[: MAX_BODY_BYTES // 2], too_big[MAX_BODY_BYTES // 2 :]]),
            headers={"Content-Type": "audio/wav"},
        )
    assert reply.status_code == 413
    assert reply.headers["content-type"].startswith("application/problem+json")
    problem = reply.json()
    assert problem["type"] == "urn:acula:problem:too_large"
    assert "gateway" in problem["detail"] and problem["instance"] == reply.headers["x-request-id"]
    # Refused at the gateway: the service never saw a 413.
    metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
    assert 'status="413"' not in metrics


def test_metrics_are_not_served_through_the_gateway(gateway: Gateway, service: LiveServer):
    with gateway.client() as client:
        assert client.get(f"{PREFIX}/metrics").status_code == 404
        assert client.get("/metrics").status_code == 404
        assert client.get(f"{PREFIX}/readyz").status_code == 200
    assert httpx.get(f"{service.url}/metrics", timeout=10).status_code == 200  # internal network only


def test_container_healthcheck_script_follows_readiness(service: LiveServer):
    script = str(DOCKER / "healthcheck.py")
    port = service.url.rsplit(":", 1)[1]
    ready = subprocess.run(
        [sys.executable, script], env={"ACULA_PORT": port}, capture_output=True, timeout=30
    )
    assert ready.returncode == 0, ready.stderr
    closed = subprocess.run(
        [sys.executable, script], env={"ACULA_PORT": str(free_port())}, capture_output=True, timeout=30
    )
    assert closed.returncode == 1


def prometheus_query(base: str, query: str) -> list[dict]:
    reply = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5)
    reply.raise_for_status()
    return reply.json()["data"]["result"]


def test_prometheus_scrapes_the_service_with_the_project_config(
    gateway: Gateway, service: LiveServer, tmp_path: Path
):
    prometheus = require_binary("prometheus")
    promtool = require_binary("promtool")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = render_prometheus_config(tmp_path, service.url.removeprefix("http://"), f"127.0.0.1:{port}")
    for args in (
        ["check", "config", str(config)],
        ["check", "rules", str(DOCKER / "prometheus" / "alerts.yml")],
    ):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    with gateway.client() as client:  # traffic through the gateway, so there is something to count
        assert client.post(f"{PREFIX}/predict", files=upload()).status_code == 200

    def api_ready() -> bool:
        try:
            return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    command = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with running(command, tmp_path / "prometheus.log", api_ready, timeout=60):
        deadline = time.monotonic() + 60
        up = predictions = []
        while time.monotonic() < deadline:
            up = prometheus_query(base, 'up{job="acula"}')
            predictions = prometheus_query(
                base, 'sum(acula_request_duration_seconds_count{job="acula", route="/predict", status="200"})'
            )
            if up and up[0]["value"][1] == "1" and predictions and float(predictions[0]["value"][1]) > 0:
                break
            time.sleep(0.5)
        assert up and up[0]["value"][1] == "1", f"target not up: {up}"
        assert predictions and float(predictions[0]["value"][1]) > 0, predictions
        # The project's alert rules are loaded and evaluate without errors against the real series.
        rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        loaded = {rule["name"]: rule for group in rules for rule in group["rules"]}
        assert {"AculaTargetDown", "AculaNotReady", "AculaHighErrorRate", "AculaQueueSaturated"} <= set(
            loaded
        )
        time.sleep(2)  # at least one evaluation at a 1 s interval
        rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        health = {rule["name"]: rule["health"] for group in rules for rule in group["rules"]}
        assert set(health.values()) == {"ok"}, health
        # A healthy, ready service fires nothing.
        alerts = httpx.get(f"{base}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        assert [a for a in alerts if a["state"] == "firing"] == []
