"""Benchmark the inference service against raw onnxruntime, on the same windows (not a test).

Starts ``acula serve`` on a loopback port, sends 10-second recordings over real HTTP at concurrency 1, 8 and
32, and reports latency p50/p95/p99 and throughput. In the same run it measures the raw onnxruntime
throughput of the bundle's encoder on the windows of the same recording, in batches of ``max_batch_size``
with the same thread settings, and prints service/raw throughput at each concurrency and p99/p50 at c=8.

    .venv/bin/python scripts/bench_service.py --tiny                 # the tests' tiny bundle
    .venv/bin/python scripts/bench_service.py --tiny --heavy         # the same graph, ~30 ms per window
    .venv/bin/python scripts/bench_service.py --bundle models/acula-default

The load generator runs on the same machine as the server: on a small host it takes CPU from the server,
so the ratio is a lower bound. ``srv p50/p99`` are the service's own decode-to-result times
(``timings_ms.total``), which exclude reading the upload and the client's side.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from loadgen import cpu_seconds  # noqa: E402  (scripts/ is on sys.path when this runs as a script)


def recording(rate: int, seconds: float, seed: int = 0) -> bytes:
    """A 10-second 16-bit WAV (tone + noise) at the bundle's rate."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    samples = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(len(t))
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def raw_throughput(bundle: Path, data: bytes, threads: int, batch: int, seconds: float) -> dict[str, float]:
    """Recordings per second of the encoder alone on this recording's windows (decode excluded)."""
    from service.core.pipeline import InferencePipeline

    pipeline = InferencePipeline.from_bundle(
        bundle, provider="cpu", intra_op_threads=threads, max_batch_size=batch
    )
    pipeline.warm_up()
    _, windows = pipeline.decode_and_cut(data)
    # Many recordings' windows back to back, cut into full batches, as the batcher would under load.
    stacked = np.concatenate([windows] * max(1, -(-batch // len(windows))) * 4)
    done_windows, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        for start in range(0, len(stacked) - batch + 1, batch):
            pipeline.backend.run(stacked[start : start + batch])
            done_windows += batch
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "windows_per_recording": len(windows),
        "cpu_ms_per_recording": 1000.0 * cpu * len(windows) / done_windows,
        "windows_per_s": done_windows / elapsed,
        "recordings_per_s": done_windows / elapsed / len(windows),
    }


async def load(url: str, data: bytes, concurrency: int, requests: int, pid: int) -> dict[str, float]:
    """Closed loop: ``concurrency`` clients send ``requests`` uploads in all. Also measures the CPU the server
    process and this client used, because on a small host they share the cores the ratio is measured on."""
    import httpx

    latencies: list[float] = []
    server_ms: list[float] = []  # the service's own decode-to-result time (timings_ms.total)
    failures = 0
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # The multipart body is encoded once: the client shares the CPU with the server and should spend little.
    boundary = "acula-bench-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="r.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    async with httpx.AsyncClient(timeout=120.0, limits=limits) as client:

        async def worker() -> None:
            nonlocal remaining, failures
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post(f"{url}/predict", content=body, headers=headers)
                if response.status_code != 200:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - started)
                server_ms.append(response.json()["timings_ms"]["total"])

        for _ in range(min(concurrency, 4)):  # warm connections
            await client.get(f"{url}/healthz")
        started, client_cpu, server_cpu = time.perf_counter(), time.process_time(), cpu_seconds(pid) or 0.0
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_cpu = (cpu_seconds(pid) or 0.0) - server_cpu
    ms = np.asarray(latencies) * 1000.0
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failures": failures,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "recordings_per_s": len(latencies) / elapsed,
        "server_p50_ms": float(np.percentile(server_ms, 50)),
        "server_p99_ms": float(np.percentile(server_ms, 99)),
        "server_cores": server_cpu / elapsed,
        "client_cores": client_cpu / elapsed,
        "server_cpu_ms_per_recording": 1000.0 * server_cpu / max(1, len(latencies)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, help="Bundle folder (default: build the tiny test bundle).")
    parser.add_argument("--tiny", action="store_true", help="Build and use the tests' tiny bundle.")
    parser.add_argument("--heavy", action="store_true", help="Tiny bundle with a heavier encoder (256 ch).")
    parser.add_argument("--seconds", type=float, default=10.0, help="Recording length.")
    parser.add_argument(
        "--requests", type=int, default=0, help="Requests per concurrency (default 8 x c, >= 40)."
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--threads", type=int, default=0, help="onnxruntime intra-op threads (default: CPUs)."
    )
    parser.add_argument(
        "--server-threads",
        type=int,
        default=0,
        help="The service's intra-op threads if not the raw run's (default: the same).",
    )
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--raw-seconds", type=float, default=5.0, help="How long to time raw onnxruntime.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)

    from service.bundle import load_manifest
    from service.settings import available_cpus
    from tests.bundles import TinyBundleOptions, build_tiny_bundle
    from tests.service.live import serve

    threads = args.threads or available_cpus()
    workdir = Path(tempfile.mkdtemp(prefix="acula-bench-"))
    bundle = args.bundle
    if bundle is None:
        options = TinyBundleOptions(sample_rate=16000, window_seconds=4.0, hop_seconds=2.0)
        if args.heavy:
            options = TinyBundleOptions(
                sample_rate=16000, window_seconds=4.0, hop_seconds=2.0, channels=256, stride=8
            )
        bundle = workdir / "bundle"
        build_tiny_bundle(bundle, options)
    manifest = load_manifest(bundle)
    data = recording(manifest.audio.sample_rate, args.seconds)

    raw = raw_throughput(bundle, data, threads, args.max_batch_size, args.raw_seconds)
    env = {
        "ACULA_INTRA_OP_THREADS": str(args.server_threads or threads),
        "ACULA_MAX_BATCH_SIZE": str(args.max_batch_size),
        "ACULA_MAX_WAIT_MS": str(args.max_wait_ms),
        "ACULA_MAX_QUEUE": str(max(64, 2 * max(args.concurrency))),
        "ACULA_LOG_LEVEL": "warning",
    }
    results = []
    with serve(bundle, workdir, env, ready_timeout=300) as server:
        pid = server.process.pid
        for concurrency in args.concurrency:
            requests = args.requests or max(40, 8 * concurrency)
            asyncio.run(load(server.url, data, concurrency, min(8, requests), pid))  # warm-up round
            results.append(asyncio.run(load(server.url, data, concurrency, requests, pid)))

    print(
        f"bundle {manifest.name} {manifest.version}; {args.seconds:.0f} s recordings = "
        f"{raw['windows_per_recording']} windows; {threads} intra-op threads (raw), "
        f"{args.server_threads or threads} (service); host CPUs {os.cpu_count()}"
    )
    print(
        f"raw onnxruntime: {raw['windows_per_s']:.1f} windows/s = "
        f"{raw['recordings_per_s']:.1f} recordings/s, "
        f"{raw['cpu_ms_per_recording']:.1f} CPU-ms per recording"
    )
    print(
        f"{'c':>3} {'n':>5} {'fail':>4} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'rec/s':>8} {'svc/raw':>8}"
        f" {'srv p50':>8} {'srv p99':>8} {'srv cores':>9} {'cli cores':>9} {'srv CPU-ms/rec':>14}"
    )
    for row in results:
        row["service_over_raw"] = row["recordings_per_s"] / raw["recordings_per_s"]
        print(
            f"{row['concurrency']:>3} {row['requests']:>5} {row['failures']:>4} {row['p50_ms']:>9.1f} "
            f"{row['p95_ms']:>9.1f} {row['p99_ms']:>9.1f} {row['recordings_per_s']:>8.1f} "
            f"{row['service_over_raw']:>8.2f} {row['server_p50_ms']:>8.1f} {row['server_p99_ms']:>8.1f}"
            f" {row['server_cores']:>9.2f} {row['client_cores']:>9.2f}"
            f" {row['server_cpu_ms_per_recording']:>14.1f}"
        )
    at8 = next((row for row in results if row["concurrency"] == 8), None)
    if at8:
        print(f"p99/p50 at c=8: {at8['p99_ms'] / at8['p50_ms']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"raw": raw, "service": results, "threads": threads}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
