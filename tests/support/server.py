"""Run real processes on loopback for tests and scripts: ``acula serve`` (real uvicorn, real sockets, real
signals) and any other server (nginx, Prometheus), each stopped with SIGTERM, then SIGKILL, afterwards.

The one copy of this logic: the tests, ``scripts/loadgen.py`` and ``scripts/bench_service.py`` all start the
service through :func:`serve`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; no-op when it has already exited."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running(
    command: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    timeout: float = 60.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stop_timeout: float = 15.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` (output to ``log_path``); yield once ``ready()`` is true; always stop it after."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{command[0]} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{command[0]} not ready after {timeout} s:\n{log_path.read_text(errors='replace')}"
                )
            time.sleep(0.1)
        yield process
    finally:
        stop(process, stop_timeout)


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


ACULA_SERVE = ("-m", "acula", "serve")


@contextmanager
def serve(
    bundle: Path,
    tmp: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    log_level: str = "info",
    argv: Sequence[str] = ACULA_SERVE,
    cwd: Path = REPO,
) -> Iterator[LiveServer]:
    """Run ``acula serve --bundle`` (or ``python argv... --bundle``, e.g. the server with a test double of
    :mod:`tests.support.doubles`) on a free loopback port; yield once ``/readyz`` is 200; stop it after."""
    port = free_port()
    log_path = tmp / f"server-{port}.log"
    environment = {**os.environ, "ACULA_LOG_LEVEL": log_level, "ACULA_INTRA_OP_THREADS": "1", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    command = [sys.executable, *argv, "--bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    prefix = environment.get("ACULA_ROOT_PATH", "")
    with running(
        command,
        log_path,
        lambda: _answers(f"{url}{prefix}/readyz"),
        timeout=ready_timeout,
        cwd=cwd,
        env=environment,
        stop_timeout=30.0,
    ) as process:
        yield LiveServer(url, process, log_path)


@contextmanager
def serve_checked(
    bundle: Path, tmp: Path, env: dict[str, str] | None = None, **options: Any
) -> Iterator[LiveServer]:
    """:func:`serve`, asserting afterwards that the server was still alive and never logged an unhandled
    error (a 500) or a traceback: what every reliability fixture wants of the server it shared."""
    with serve(bundle, tmp, env, **options) as server:
        yield server
        assert server.process.poll() is None, f"the server died:\n{server.logs()[-3000:]}"
    logs = server.logs()
    assert "unhandled error" not in logs and "Traceback" not in logs, logs[-3000:]
