"""Benchmark the inference service against raw onnxruntime, on the same windows (not a test).

Starts ``acula serve`` on a loopback port with its default settings, sends 10-second recordings as multipart
uploads over real HTTP at concurrency 1, 8 and 32, and reports latency p50/p95/p99, throughput and the CPU the
server and the client used. In the same run it measures raw onnxruntime on the windows of the same
recording, in rounds before, between and after the service phases (each phase is compared with the rounds
around it: a shared host's speed drifts), over several configurations: the service's own, one batch with
every thread, one single-threaded batch per CPU, each in full batches and in batches of one recording. The
ratio's denominator is the best of them. Prints service/raw at each concurrency and p99/p50 at c=8, and
splits the ratio into its two factors: CPU efficiency (raw's CPU-ms per recording over the server's) and the
share of cores the server keeps busy compared with raw onnxruntime.

    .venv/bin/python scripts/bench_service.py --bundle models/acula-default
    .venv/bin/python scripts/bench_service.py --tiny                 # the tests' tiny bundle
    .venv/bin/python scripts/bench_service.py --tiny --heavy         # the same graph, ~30 ms per window
    .venv/bin/python scripts/bench_service.py --floor                # an almost free encoder, default input

The load generator runs on the same machine as the server, so it is a minimal keep-alive client that costs
a few percent of a core; the ratio is still a lower bound for a server with the client elsewhere.
``srv p50/p99`` are the service's own decode-to-result times (``timings_ms.total``), which exclude reading
the upload and the client's side. docs/PERFORMANCE.md has the figures and what they mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np

if TYPE_CHECKING:
    from acula.service.core.pipeline import InferencePipeline

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from loadgen import cpu_seconds  # noqa: E402  (scripts/ is on sys.path when this runs as a script)


def recording(rate: int, seconds: float, seed: int = 0) -> bytes:
    """A 10-second 16-bit WAV (tone + noise) at the bundle's rate. A bundle with a sound-type gate hears it
    as no auscultation, so :func:`load` states ``sound_type=heart``: every request runs the heart probes."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    samples = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(len(t))
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass(frozen=True)
class EngineConfig:
    """How the encoder is run: ``streams`` batches of ``batch`` windows at once, ``threads`` threads each."""

    threads: int
    streams: int
    batch: int

    def __str__(self) -> str:
        return f"{self.streams}x{self.threads}/b{self.batch}"


class RawEncoder:
    """The bundle's encoder alone, timed on one recording's windows in full batches (decode excluded)."""

    def __init__(self, bundle: Path, data: bytes) -> None:
        self.bundle = bundle
        self._pipelines: dict[int, InferencePipeline] = {}  # one per intra-op thread count
        _, self.windows = self._pipeline(1).decode_and_cut(data)

    def full_batch(self, size: int) -> np.ndarray:
        """Many recordings' windows back to back, cut to ``size``, as the batcher would under load."""
        stacked = np.concatenate([self.windows] * max(1, -(-size // len(self.windows))))
        return np.ascontiguousarray(stacked[:size])

    def _pipeline(self, threads: int) -> InferencePipeline:
        from acula.service.core.pipeline import InferencePipeline

        if threads not in self._pipelines:
            pipeline = InferencePipeline.from_bundle(self.bundle, provider="cpu", intra_op_threads=threads)
            pipeline.warm_up()
            self._pipelines[threads] = pipeline
        return self._pipelines[threads]

    def measure(self, config: EngineConfig, seconds: float) -> dict[str, float]:
        """Recordings per second with ``config.streams`` threads each running batches back to back."""
        backend = self._pipeline(config.threads).backend
        batch = self.full_batch(config.batch)
        done = [0] * config.streams
        deadline = time.perf_counter() + seconds

        def stream(index: int) -> None:
            while time.perf_counter() < deadline:
                backend.run(batch)
                done[index] += len(batch)

        started, cpu_started = time.perf_counter(), time.process_time()
        workers = [threading.Thread(target=stream, args=(i,)) for i in range(config.streams)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        windows = sum(done)
        per_recording = len(self.windows)
        return {
            "windows_per_s": windows / elapsed,
            "recordings_per_s": windows / elapsed / per_recording,
            "cpu_ms_per_recording": 1000.0 * cpu * per_recording / windows,
            "cores": cpu / elapsed,
        }


def raw_mean(rounds: Sequence[dict[str, dict[str, float]]], config: str, figure: str) -> float:
    """One figure of one raw configuration, averaged over the rounds around a service phase."""
    return sum(measured[config][figure] for measured in rounds) / len(rounds)


def multipart_body(data: bytes) -> tuple[bytes, str]:
    """The upload as a browser or ``curl -F`` would send it, encoded once."""
    boundary = "acula-bench-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="r.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class KeepAliveConnection:
    """A minimal HTTP/1.1 client for one keep-alive connection, for this benchmark only.

    The load generator shares the host's cores with the server, and every CPU-millisecond it spends is taken
    from the server it measures: httpx spent about 3.7 ms of CPU per request here, this client a few tenths.
    It sends one pre-encoded request and reads a ``Content-Length`` response (all uvicorn sends us); anything
    else raises, so it cannot silently mis-measure.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw_request: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw_request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in header_lines if line)
        )
        if "content-length" not in headers:
            raise RuntimeError(f"response without Content-Length: {status_line}")
        body = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split()[1]), body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


async def load(url: str, data: bytes, concurrency: int, requests: int, pid: int) -> dict[str, float]:
    """Closed loop: ``concurrency`` clients send ``requests`` uploads in all. Also measures the CPU the server
    process and this client used, because on a small host they share the cores the ratio is measured on."""
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    body, content_type = multipart_body(data)
    raw_request = (
        f"POST /predict?sound_type=heart HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    server_ms: list[float] = []  # the service's own decode-to-result time (timings_ms.total)
    failures = 0
    remaining = requests
    connections = [KeepAliveConnection(host, port) for _ in range(concurrency)]

    refusal = ""

    async def worker(connection: KeepAliveConnection) -> None:
        nonlocal remaining, failures, refusal
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            status, payload = await connection.request(raw_request)
            if status != 200:
                failures += 1
                refusal = refusal or f"HTTP {status}: {payload[:300]!r}"
                continue
            latencies.append(time.perf_counter() - started)
            server_ms.append(json.loads(payload)["timings_ms"]["total"])

    started, client_cpu, server_cpu = time.perf_counter(), time.process_time(), cpu_seconds(pid) or 0.0
    try:
        await asyncio.gather(*(worker(connection) for connection in connections))
    finally:
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_cpu = (cpu_seconds(pid) or 0.0) - server_cpu
        for connection in connections:
            await connection.close()
    if not latencies:
        raise SystemExit(f"every one of {requests} requests failed; the first answer: {refusal}")
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
    parser.add_argument(
        "--floor",
        action="store_true",
        help="The tiny encoder on the audio contract of --bundle (default models/acula-default): the "
        "service's own cost per request, beyond any encoder.",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="Recording length.")
    parser.add_argument(
        "--requests", type=int, default=0, help="Requests per concurrency (default 32 x c, >= 256)."
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--threads", type=int, default=0, help="The service's ACULA_INTRA_OP_THREADS (default: its default)."
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="The service's ACULA_INFERENCE_WORKERS (default: its default)."
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=0,
        help="The service's ACULA_MAX_BATCH_SIZE (default: its CPU default).",
    )
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--log-level", default="info", help="The service's log level (default: its default).")
    parser.add_argument(
        "--raw-seconds", type=float, default=2.0, help="Seconds per raw configuration per round."
    )
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)

    from acula.service.bundle import load_manifest
    from acula.service.core.pipeline import CPU_BATCH_SIZE
    from acula.service.settings import Settings, available_cpus
    from tests.support.bundles import TinyBundleOptions, build_tiny_bundle
    from tests.support.server import serve

    defaults = Settings(bundle=Path("."))
    batch = args.max_batch_size or CPU_BATCH_SIZE
    service_engine = EngineConfig(
        threads=args.threads or defaults.intra_op_threads,
        streams=args.workers or defaults.inference_workers,
        batch=batch,
    )
    cpus = available_cpus()

    workdir = Path(tempfile.mkdtemp(prefix="acula-bench-"))
    bundle = args.bundle
    if args.floor:
        # The tiny encoder (about 0.3 CPU-ms per recording) on the real bundle's audio contract: the same
        # uploads, decoding and windows, so what the service spends beyond it is its own cost per request.
        contract = load_manifest(args.bundle or REPO / "models" / "acula-default").audio
        options = TinyBundleOptions(
            sample_rate=contract.sample_rate,
            window_seconds=contract.window_seconds,
            hop_seconds=contract.hop_seconds,
            name="acula-floor",
        )
        bundle = workdir / "bundle"
        build_tiny_bundle(bundle, options)
    elif bundle is None:
        options = TinyBundleOptions(sample_rate=16000, window_seconds=4.0, hop_seconds=2.0)
        if args.heavy:
            options = TinyBundleOptions(
                sample_rate=16000, window_seconds=4.0, hop_seconds=2.0, channels=256, stride=8
            )
        bundle = workdir / "bundle"
        build_tiny_bundle(bundle, options)
    manifest = load_manifest(bundle)
    data = recording(manifest.audio.sample_rate, args.seconds)
    raw = RawEncoder(bundle, data)
    # Raw onnxruntime in the service's configuration and in the plain ones for this host's CPUs (one batch
    # with every thread, or one single-threaded batch per CPU), in full batches and in batches of one
    # recording: the ratio's denominator is the best of them, so neither a poor engine configuration of the
    # service nor a batch size that suits the encoder badly can flatter the ratio.
    raw_configs = list(
        dict.fromkeys(
            EngineConfig(threads, streams, size)
            for threads, streams in (
                (service_engine.threads, service_engine.streams),
                (cpus, 1),
                (1, cpus),
            )
            for size in (batch, min(batch, len(raw.windows)))
        )
    )

    def raw_round() -> dict[str, dict[str, float]]:
        return {str(config): raw.measure(config, args.raw_seconds) for config in raw_configs}

    env = {
        "ACULA_INTRA_OP_THREADS": str(service_engine.threads),
        "ACULA_INFERENCE_WORKERS": str(service_engine.streams),
        "ACULA_PROVIDER": "cpu",  # raw onnxruntime is timed on CPU too
        "ACULA_MAX_BATCH_SIZE": str(batch),
        "ACULA_MAX_WAIT_MS": str(args.max_wait_ms),
        "ACULA_MAX_INFERENCE_REQUESTS": str(max(64, 2 * max(args.concurrency))),
        "ACULA_LOG_LEVEL": args.log_level,
    }
    results = []
    # Raw rounds before, between and after the service phases: each phase is compared with the raw
    # throughput measured right around it, because this shared host's speed drifts by +-15 % within minutes.
    rounds = []
    with serve(bundle, workdir, env, ready_timeout=300) as server:
        pid = server.process.pid
        for concurrency in args.concurrency:
            rounds.append(raw_round())
            requests = args.requests or max(256, 32 * concurrency)
            asyncio.run(load(server.url, data, concurrency, min(16, requests), pid))  # warm-up round
            results.append(asyncio.run(load(server.url, data, concurrency, requests, pid)))
        rounds.append(raw_round())

    print(
        f"bundle {manifest.name} {manifest.version}; {args.seconds:.0f} s recordings = "
        f"{len(raw.windows)} windows; service engine {service_engine} (batches at once x intra-op threads "
        f"/ max batch), log level {args.log_level}; CPUs {cpus}"
    )
    names = [str(config) for config in raw_configs]
    print("raw onnxruntime, recordings/s (CPU-ms per recording) per round:")
    print("  " + " " * 9 + "".join(f"{name:>20}" for name in names))
    for index, measured in enumerate(rounds):
        cells = "".join(
            f"{measured[name]['recordings_per_s']:>11.1f} ({measured[name]['cpu_ms_per_recording']:>4.1f} ms)"
            for name in names
        )
        print(f"  round {index}{cells}")
    print(
        f"{'c':>3} {'n':>5} {'fail':>4} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'rec/s':>8} {'raw':>7}"
        f" {'best raw':>10} {'svc/raw':>8} {'srv p50':>8} {'srv p99':>8} {'srv cores':>9} {'cli cores':>9}"
        f" {'srv CPU-ms/rec':>14} {'raw CPU-ms/rec':>14} {'CPU eff':>7} {'cores':>6}"
    )
    for index, row in enumerate(results):
        around = (rounds[index], rounds[index + 1])
        mean = {name: raw_mean(around, name, "recordings_per_s") for name in names}
        best = max(names, key=mean.__getitem__)
        row["raw_recordings_per_s"] = mean[best]
        row["raw_config"] = best
        row["raw_cpu_ms_per_recording"] = raw_mean(around, best, "cpu_ms_per_recording")
        row["service_over_raw"] = row["recordings_per_s"] / mean[best]
        # The ratio is (about) the product of two factors: how much CPU the service spends per recording
        # against the encoder alone, and how many cores it keeps busy against raw onnxruntime.
        row["cpu_efficiency"] = row["raw_cpu_ms_per_recording"] / row["server_cpu_ms_per_recording"]
        row["core_share"] = row["server_cores"] / raw_mean(around, best, "cores")
        print(
            f"{row['concurrency']:>3} {row['requests']:>5} {row['failures']:>4} {row['p50_ms']:>9.1f} "
            f"{row['p95_ms']:>9.1f} {row['p99_ms']:>9.1f} {row['recordings_per_s']:>8.1f} {mean[best]:>7.1f}"
            f" {best:>10} {row['service_over_raw']:>8.2f} {row['server_p50_ms']:>8.1f}"
            f" {row['server_p99_ms']:>8.1f} {row['server_cores']:>9.2f} {row['client_cores']:>9.2f}"
            f" {row['server_cpu_ms_per_recording']:>14.1f} {row['raw_cpu_ms_per_recording']:>14.1f}"
            f" {row['cpu_efficiency']:>7.2f} {row['core_share']:>6.2f}"
        )
    print(
        "svc/raw ~ CPU eff x cores: CPU eff = raw / service CPU-ms per recording (the ratio's ceiling with "
        "every core busy), cores = the server's busy cores / raw onnxruntime's"
    )
    at8 = next((row for row in results if row["concurrency"] == 8), None)
    if at8:
        print(f"p99/p50 at c=8: {at8['p99_ms'] / at8['p50_ms']:.2f}")
    if args.json:
        payload = {"engine": str(service_engine), "raw_rounds": rounds, "service": results, "cpus": cpus}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
