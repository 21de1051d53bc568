"""Measure the bounds docs/RELIABILITY.md states, by attacking a live ``acula serve`` on loopback: memory
under 16 concurrent worst-case uploads, the longest time a slot is held, and what a legitimate client sees
during each attack. Not a test (no assertion): a measurement for the record, printed as JSON.

    .venv/bin/python -m tests.reliability.attacks --bundle models/acula-default --out attacks.json

The server runs with its default settings unless ``--env K=V`` says otherwise. The legitimate client sends a
9-second recording (as in issue 20) and records status and latency. Memory is the server's RSS from /proc:
``VmHWM`` (its peak) reset to the current RSS before each attack through ``/proc/PID/clear_refs``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.reliability.mutations import rate_bomb
from tests.support.audio_cases import encode, sine
from tests.support.rawhttp import connect, in_flight, metric, read_response, rss_mib, upload_head, wait_until
from tests.support.server import LiveServer, serve

LEGITIMATE = encode(0.3 * np.random.default_rng(0).standard_normal(9 * 8000).astype(np.float32), 8000)


def post(server: LiveServer, data: bytes, timeout: float = 120.0) -> tuple[int | str, float]:
    started = time.monotonic()
    try:
        response = httpx.post(
            f"{server.url}/predict", files={"file": ("x", data, "audio/wav")}, timeout=timeout
        )
        status: int | str = response.status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, round(time.monotonic() - started, 2)


def reset_peak(pid: int) -> None:
    """Start ``VmHWM`` again from the current RSS (Linux: writing 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


def legitimate_during(server: LiveServer, attack: Callable[[], Any], every_s: float = 2.0) -> dict[str, Any]:
    """Run ``attack`` while a legitimate client posts every ``every_s`` seconds; what each side saw."""
    pid = server.process.pid
    reset_peak(pid)
    before = rss_mib(pid)
    seen: list[tuple[int | str, float]] = []
    done = threading.Event()

    def legitimate() -> None:
        while not done.is_set():
            seen.append(post(server, LEGITIMATE))
            done.wait(every_s)

    client = threading.Thread(target=legitimate)
    started = time.monotonic()
    client.start()
    try:
        outcome = attack()
    finally:
        done.set()
        client.join()
    return {
        "attack": outcome,
        "seconds": round(time.monotonic() - started, 1),
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(rss_mib(pid, "VmHWM"), 1),
        "rss_after_mib": round(rss_mib(pid), 1),
        "legitimate": {
            "statuses": dict(Counter(str(status) for status, _ in seen)),
            "latency_s": sorted(latency for _, latency in seen),
        },
    }


def concurrent_uploads(server: LiveServer, uploads: list[bytes]) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        answers = list(pool.map(lambda data: post(server, data), uploads))
    return {
        "statuses": dict(Counter(str(status) for status, _ in answers)),
        "longest_s": max(seconds for _, seconds in answers),
    }


def trickling_bodies(server: LiveServer, connections: int, seconds: float) -> dict[str, Any]:
    """``connections`` clients each sending an upload a byte per second, reconnecting when cut, for
    ``seconds``: how long each connection held its slot before the server cut it."""
    held: list[float] = []
    statuses: Counter[str] = Counter()
    stop = time.monotonic() + seconds

    def attacker() -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                with connect(server, timeout=120) as sock:
                    sock.sendall(upload_head(len(LEGITIMATE) + 200) + LEGITIMATE[:100])
                    sock.settimeout(1.0)
                    for index in range(100, len(LEGITIMATE)):
                        try:
                            status, _, _ = read_response(sock)
                            statuses[str(status)] += 1
                            break
                        except TimeoutError:
                            sock.sendall(LEGITIMATE[index : index + 1])
            except OSError as exc:
                statuses[type(exc).__name__] += 1
            held.append(time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=connections) as pool:
        for _ in range(connections):
            pool.submit(attacker)
    return {"connections": connections, "statuses": dict(statuses), "longest_hold_s": round(max(held), 2)}


def huge_header(server: LiveServer, megabytes: int) -> dict[str, Any]:
    """Stream a header of ``megabytes`` MB; meanwhile time ``/healthz``."""
    probes: list[float] = []
    sent = 0
    status: int | str = "closed"
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            while sent < megabytes * 2**20:
                sock.sendall(b"a" * 2**16)
                sent += 2**16
                if sent % 2**20 == 0:
                    started = time.monotonic()
                    httpx.get(f"{server.url}/healthz", timeout=30)
                    probes.append(time.monotonic() - started)
        except OSError:
            pass
        with contextlib.suppress(OSError):  # (ConnectionError is one)
            status = read_response(sock)[0]
    return {"sent_bytes": sent, "status": status, "healthz_longest_s": round(max(probes, default=0.0), 3)}


def hang_ups(server: LiveServer, count: int) -> dict[str, Any]:
    for _ in range(count):
        with connect(server) as sock:
            sock.sendall(upload_head(len(LEGITIMATE) + 200) + LEGITIMATE[: len(LEGITIMATE) // 2])
    wait_until(lambda: in_flight(server) == 0, timeout=60)
    return {
        "client_closed": metric(server, 'acula_failures_total{code="client_closed"}'),
        "internal": metric(server, 'acula_failures_total{code="internal"}'),
    }


def unauthenticated_stalls(server: LiveServer, count: int) -> dict[str, Any]:
    answered = []
    for _ in range(count):
        with connect(server, timeout=10) as sock:
            sock.sendall(upload_head(45_000_000, path="/similar-reports"))
            started = time.monotonic()
            answered.append((read_response(sock)[0], time.monotonic() - started))
    return {"statuses": dict(Counter(str(s) for s, _ in answered)), "longest_s": max(t for _, t in answered)}


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "python": platform.python_version(),
        "load_1min_before": __import__("os").getloadavg()[0],
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("--trickle-seconds", type=float, default=40.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    results: dict[str, Any] = {"machine": machine(), "env": env}
    unset, declared = rate_bomb(declared=False), rate_bomb(declared=True)
    # The largest upload the defaults take: 590 s of 44.1 kHz 16-bit mono, 52.0 MB (limit 52,428,800 B).
    largest = encode(sine(220.0, 590.0, 44100) * 0.5, 44100)
    with tempfile.TemporaryDirectory() as tmp:
        with serve(args.bundle, Path(tmp), env, ready_timeout=300, log_level="warning") as server:
            results["baseline"] = legitimate_during(server, lambda: time.sleep(6))
            results["rate_bombs_16"] = legitimate_during(
                server, lambda: concurrent_uploads(server, [unset] * 16)
            )
            results["rate_bombs_16_declared"] = legitimate_during(
                server, lambda: concurrent_uploads(server, [declared] * 16)
            )
            results["largest_uploads_16"] = legitimate_during(
                server, lambda: concurrent_uploads(server, [largest] * 16)
            )
            results["rate_bombs_64_past_deadline"] = legitimate_during(
                server, lambda: concurrent_uploads(server, [unset] * 64)
            )
            results["trickling_bodies_64"] = legitimate_during(
                server, lambda: trickling_bodies(server, 64, args.trickle_seconds)
            )
            results["huge_header_100mb"] = legitimate_during(server, lambda: huge_header(server, 100))
            results["hang_ups_200"] = legitimate_during(server, lambda: hang_ups(server, 200))
        with serve(args.bundle, Path(tmp), {**env, "ACULA_API_KEYS": "k"}, ready_timeout=300) as server:
            results["unauthenticated_stalls_20"] = unauthenticated_stalls(server, 20)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    socket.setdefaulttimeout(180)
    main()
