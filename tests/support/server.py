"""Run ``acula serve`` as a real process on 127.0.0.1 for tests (real uvicorn, real sockets, real signals)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)


@contextmanager
def serve(
    bundle: Path, tmp: Path, env: dict[str, str] | None = None, ready_timeout: float = 60.0
) -> Iterator[LiveServer]:
    """Run ``acula serve --bundle`` on a free loopback port; yield once ``/readyz`` is 200; stop it after."""
    port = free_port()
    log_path = tmp / f"server-{port}.log"
    environment = {**os.environ, "ACULA_LOG_LEVEL": "info", "ACULA_INTRA_OP_THREADS": "1", **(env or {})}
    command = [
        sys.executable,
        "-m",
        "acula",
        "serve",
        "--bundle",
        str(bundle),
    ]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        prefix = environment.get("ACULA_ROOT_PATH", "")
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.logs()}")
            try:
                if httpx.get(f"{server.url}{prefix}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout} s:\n{server.logs()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
