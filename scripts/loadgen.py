"""Load generator for ``POST /predict``: find saturation, then hold twice that load and watch what breaks.

Why a client of our own (asyncio + httpx) rather than wrk or locust: it uploads real recordings from the
shared data in several formats, counts every request sent against every response received (the two must
match: a request that vanishes is the worst failure a gateway can see), and samples the server's RSS from
/proc while it runs, all in one JSON document.

Phases:
1. **ramp** (closed loop): ``c`` workers each send the next request when the last one is answered, for
   c = 1, 2, 4, ...; saturation is the first level whose throughput grows less than ``--growth`` over the best
   so far, or that sees a 503. The saturation throughput is the best level's answered 200s per second.
2. **hold** (open loop): requests are *started* at ``--hold-factor`` x the saturation rate for ``--hold``
   seconds, whatever the server answers, so an overloaded server must refuse (503) or queue; a closed loop
   would slow itself down and hide overload. In-flight requests are capped (``--max-inflight``) so the client
   stays bounded; starts skipped at the cap are counted, not hidden.

Records per phase: throughput, p50/p95/p99/max of 200s (client side), every status, transport errors, the
503 share and why (the problem's code: ``overloaded`` is the admission, before the body), the Retry-After
values, the server's own latency by status from its ``/metrics`` histogram (without the time a request spent
in this client, which on a small shared machine is most of it), the CPU used by server and client; over the
run the server's RSS every second, the load average every 10 s, and requests sent vs responses received.

Usage (starts ``acula serve`` itself and stops it after)::

    .venv/bin/python scripts/loadgen.py --bundle models/acula-default --hold 300 --out load.json
    .venv/bin/python scripts/loadgen.py --url http://127.0.0.1:8000 --pid 1234   # a server already running

Only loopback URLs are accepted. Exit status 1 when a request sent got no response (sent != answered),
or on any 5xx but 503.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Idle connections are dropped after 2 s, below the server's keep-alive timeout (5 s), as a gateway must: a
# request written onto a connection the server is closing at that instant is lost (a ReadError) with no
# response; a first 60-s run lost one request that way with httpx's default of 5 s.
KEEPALIVE_S = 2.0
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))  # for tests.support.server, the one way to start a server
# Real recordings of every rate and a spread of lengths: 2 kHz PCG, 4 kHz heart/lung, 8 kHz paediatric lung,
# 16 kHz cough and breathing, and ICBHI's long multi-rate lung recordings.
SOURCES = {
    "physionet2016": "physionet2016/*/*.flac",
    "bmd_hs": "bmd_hs/train/*.flac",
    "sprsound": "sprsound/train_wav/*.flac",
    "coswara": "coswara/20200413/*/*.flac",
    "icbhi": "icbhi2017_sample/audio_and_txt/*.flac",
}


# --- the request corpus -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    name: str  # "<dataset>/<file>.<ext>"; never sent (the service must not see file names), only reported
    data: bytes
    mime: str
    seconds: float


def build_corpus(per_source: int, max_seconds: float, seed: int, workdir: Path) -> list[Upload]:
    """``per_source`` recordings from each dataset as they are (FLAC), plus one of each re-encoded to WAV, OGG
    Vorbis and MP3 in ``workdir``, so the service decodes every format it meets in a hospital."""
    import soundfile as sf

    rng = random.Random(seed)
    uploads: list[Upload] = []
    for source, pattern in SOURCES.items():
        files = sorted(DATA.glob(pattern))
        rng.shuffle(files)
        chosen = 0
        for path in files:
            try:
                info = sf.info(str(path))
            except (RuntimeError, sf.LibsndfileError):  # the releases hold a few empty or broken files
                continue
            if info.duration > max_seconds or info.duration < 1.0:
                continue
            uploads.append(Upload(f"{source}/{path.name}", path.read_bytes(), "audio/flac", info.duration))
            chosen += 1
            if chosen == per_source:
                break
    if not uploads:
        raise SystemExit(f"no recordings found under {DATA}")
    recoded = [("WAV", "PCM_16", ".wav", "audio/wav"), ("OGG", "VORBIS", ".ogg", "audio/ogg")]
    recoded.append(("MP3", "MPEG_LAYER_III", ".mp3", "audio/mpeg"))
    for index, (container, subtype, ext, mime) in enumerate(recoded * 2):
        base = uploads[(index * 7) % len(uploads)]
        samples, rate = sf.read(io.BytesIO(base.data), dtype="float32")
        if container != "WAV" and rate < 8000:  # libsndfile's Vorbis/MP3 encoders need 8 kHz or more
            continue
        path = workdir / (Path(base.name).stem + ext)
        sf.write(str(path), samples, rate, format=container, subtype=subtype)
        uploads.append(
            Upload(f"{base.name.split('/')[0]}/{path.name}", path.read_bytes(), mime, base.seconds)
        )
    return uploads


# --- the server ---------------------------------------------------------------------------------------------
@contextmanager
def started_server(bundle: Path, log_path: Path, env: dict[str, str], timeout: float = 120.0):
    """``acula serve`` on a free loopback port (the tests' own helper); yields (url, pid) once ready."""
    from tests.support.server import serve

    with serve(bundle, log_path.parent, env, ready_timeout=timeout, log_level="warning") as server:
        yield server.url, server.process.pid


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds the process has used (/proc/PID/stat), to tell a busy server from a starved
    one: on a shared machine, latency can grow because the server gets no CPU, not because it is slow."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int | None, server_before: float | None, client_before: float, began: float) -> dict:
    """Cores used by the server and by this client since ``began`` (1.0 = one core busy all the time)."""
    wall = max(1e-9, time.perf_counter() - began)
    server = cpu_seconds(pid)
    return {
        "server_cores": None
        if server is None or server_before is None
        else round((server - server_before) / wall, 2),
        "client_cores": round((time.process_time() - client_before) / wall, 2),
    }


def rss_mib(pid: int | None) -> float | None:
    """The process's resident set (VmRSS) in MiB, from /proc; None when unknown or gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


# --- measuring ----------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """What one phase saw. ``sent`` counts requests handed to the socket; each ends as exactly one of an
    HTTP response (``statuses``) or a transport error (``transport``), so sent == answered + transport."""

    sent: int = 0
    skipped: int = 0  # open loop only: starts not made because ``max_inflight`` requests were outstanding
    statuses: Counter = field(default_factory=Counter)
    transport: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, 200s only
    all_latencies: list[float] = field(default_factory=list)  # seconds, every HTTP response
    refusal_latencies: list[float] = field(default_factory=list)  # seconds, 503s only
    retry_after: Counter = field(default_factory=Counter)  # Retry-After values seen on 503s
    refused_by: Counter = field(default_factory=Counter)  # 503s by problem code
    started: float = 0.0
    ended: float = 0.0

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> dict:
        seconds = max(1e-9, self.ended - self.started)
        ok = np.asarray(self.latencies) * 1000.0
        every = np.asarray(self.all_latencies) * 1000.0
        refused = np.asarray(self.refusal_latencies) * 1000.0

        def pct(values: np.ndarray, q: float) -> float | None:
            return round(float(np.percentile(values, q)), 1) if values.size else None

        return {
            "seconds": round(seconds, 2),
            "sent": self.sent,
            "answered": self.answered,
            "transport_errors": dict(self.transport),
            "skipped_at_inflight_cap": self.skipped,
            "accounted": self.sent == self.answered + sum(self.transport.values()),
            "by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "throughput_ok_per_s": round(self.statuses.get(200, 0) / seconds, 2),
            "answered_per_s": round(self.answered / seconds, 2),
            "share_503": round(self.statuses.get(503, 0) / self.answered, 4) if self.answered else 0.0,
            "latency_ok_ms": {
                "p50": pct(ok, 50),
                "p95": pct(ok, 95),
                "p99": pct(ok, 99),
                "max": pct(ok, 100),
            },
            "latency_all_ms": {"p50": pct(every, 50), "p99": pct(every, 99)},
            "latency_503_ms": {"p50": pct(refused, 50), "p99": pct(refused, 99), "max": pct(refused, 100)},
            "retry_after_on_503": dict(self.retry_after),
            "refused_by": dict(self.refused_by),
        }


BOUNDARY = "acula-load-boundary-7f3c"
# httpx/httpcore's connection pool rescans all of its connections (and, for each queued request, all of them
# again) on every request start and end: O(connections^2) CPU per request. With one client of 512 connections
# that cost made the *generator* the bottleneck: in the first 2x holds it used 0.5-0.7 cores, the server saw
# only 5-70 requests at once while 512 waited inside the client, and the 25-75 s "latency" was mostly spent in
# the client (docs/PERFORMANCE.md). So every phase shares its connections out over clients of at most
# ``SHARD`` connections each, and every upload's multipart body is encoded once, not per request.
SHARD = 16


def multipart(upload: Upload) -> bytes:
    """The ``multipart/form-data`` body of one upload (field ``file``, neutral file name ``recording``:
    the service must not see file names, they are patient data)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="recording"\r\n'
        f"Content-Type: {upload.mime}\r\n\r\n"
    ).encode()
    return head + upload.data + f"\r\n--{BOUNDARY}--\r\n".encode()


class Clients:
    """``connections`` keep-alive connections shared out over httpx clients of at most ``SHARD`` each;
    :meth:`next` hands them out round robin."""

    def __init__(self, connections: int) -> None:
        shards = max(1, -(-connections // SHARD))
        per = -(-connections // shards)
        limits = httpx.Limits(
            max_connections=per, max_keepalive_connections=per, keepalive_expiry=KEEPALIVE_S
        )
        self.clients = [httpx.AsyncClient(limits=limits) for _ in range(shards)]
        self._turn = 0

    def next(self) -> httpx.AsyncClient:
        self._turn = (self._turn + 1) % len(self.clients)
        return self.clients[self._turn]

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients))


async def one_request(client: httpx.AsyncClient, url: str, body: bytes, tally: Tally, timeout: float) -> None:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    tally.sent += 1
    began = time.perf_counter()
    try:
        response = await client.post(f"{url}/predict", content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        tally.transport[type(exc).__name__] += 1
        return
    elapsed = time.perf_counter() - began
    tally.statuses[response.status_code] += 1
    tally.all_latencies.append(elapsed)
    if response.status_code == 200:
        tally.latencies.append(elapsed)
    elif response.status_code == 503:
        tally.retry_after[response.headers.get("retry-after", "absent")] += 1
        tally.refusal_latencies.append(elapsed)
        try:
            code = str(response.json().get("code", "unknown"))
        except ValueError:
            code = "not problem+json"
        # overloaded: the admission, before the body; not_ready, engine_error: after it.
        tally.refused_by[code] += 1


async def closed_loop(
    url: str, uploads: list[Upload], concurrency: int, seconds: float, max_requests: int, timeout: float
) -> Tally:
    """``concurrency`` workers, each sending its next request when the previous one is answered."""
    tally = Tally(started=time.perf_counter())
    stop_at = tally.started + seconds
    rng = random.Random(concurrency)
    bodies = [multipart(upload) for upload in uploads]

    async with Clients(concurrency) as clients:

        async def worker() -> None:
            client = clients.next()
            while time.perf_counter() < stop_at and tally.sent < max_requests:
                await one_request(client, url, rng.choice(bodies), tally, timeout)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.ended = time.perf_counter()
    return tally


async def open_loop(
    url: str, uploads: list[Upload], rate: float, seconds: float, max_inflight: int, timeout: float
) -> Tally:
    """Start a request every ``1/rate`` s for ``seconds`` (at most ``max_inflight`` outstanding); then wait
    for every outstanding request to end (each is bounded by ``timeout``)."""
    tally = Tally(started=time.perf_counter())
    rng = random.Random(0)
    bodies = [multipart(upload) for upload in uploads]
    pending: set[asyncio.Task] = set()
    async with Clients(max_inflight) as clients:
        for index in range(int(rate * seconds)):
            delay = tally.started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(pending) >= max_inflight:
                tally.skipped += 1
                continue
            task = asyncio.create_task(one_request(clients.next(), url, rng.choice(bodies), tally, timeout))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
    tally.ended = time.perf_counter()
    return tally


async def sample_rss(
    pid: int | None,
    samples: list[tuple[float, float]],
    t0: float,
    every: float,
    load: list[tuple[float, float]] | None = None,
) -> None:
    """Append ``(seconds since t0, RSS MiB)`` every ``every`` s until cancelled, and the machine's 1-minute
    load average to ``load`` every 10 s (the figures mean little without it on a shared machine)."""
    last_load = -1e9
    while True:
        now = time.perf_counter() - t0
        value = rss_mib(pid)
        if value is not None:
            samples.append((round(now, 1), round(value, 1)))
        if load is not None and now - last_load >= 10.0:
            load.append((round(now, 1), round(os.getloadavg()[0], 2)))
            last_load = now
        await asyncio.sleep(every)


def load_summary(load: list[tuple[float, float]]) -> dict:
    values = [value for _, value in load]
    return {
        "samples": load,
        "min": min(values, default=None),
        "mean": round(sum(values) / len(values), 2) if values else None,
        "max": max(values, default=None),
    }


SERVER_BUCKETS = "acula_request_duration_seconds_bucket{"


def server_histogram(url: str) -> dict[str, dict[float, float]]:
    """The server's own latency histogram of ``POST /predict`` by status (cumulative bucket counts)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=30).text
    except httpx.HTTPError:
        return {}
    buckets: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        if line.startswith(SERVER_BUCKETS):
            labels_text, value = line[len(SERVER_BUCKETS) :].rsplit("} ", 1)
            labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
            if labels.get("route") == "/predict" and labels.get("method") == "POST":
                buckets.setdefault(labels["status"], {})[float(labels["le"])] = float(value)
    return buckets


def server_view(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> dict:
    """Per status, what the server itself measured between two scrapes (from the request's headers to its
    response, so without the time a request spends in the client or in socket buffers): the count, and the
    histogram bucket (upper bound, seconds) that holds the p50 and the p99."""
    view = {}
    for status, buckets in sorted(after.items()):
        earlier = before.get(status, {})
        counts = sorted((bound, count - earlier.get(bound, 0.0)) for bound, count in buckets.items())
        total = counts[-1][1] if counts else 0.0
        if total <= 0:
            continue

        def upper(fraction: float, counts: list[tuple[float, float]] = counts, total: float = total) -> str:
            bound = next(b for b, count in counts if count >= fraction * total)
            return "+Inf" if bound == float("inf") else f"{bound:g}"

        view[status] = {"count": int(total), "p50_at_most_s": upper(0.5), "p99_at_most_s": upper(0.99)}
    return view


def machine() -> dict:
    """What the figures were measured on (they mean nothing without it)."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "ram_gib": round(mem_kib / 1024**2, 1),
        "python": platform.python_version(),
    }


# --- the run ------------------------------------------------------------------------------------------------
async def ramp(args: argparse.Namespace, url: str, uploads: list[Upload]) -> tuple[list[dict], dict]:
    """Double concurrency until throughput stops growing or 503s appear; returns every level and the best."""
    levels: list[dict] = []
    best: dict | None = None
    concurrency = 1
    while concurrency <= args.max_concurrency:
        before = (cpu_seconds(args.pid), time.process_time(), time.perf_counter())
        histogram = server_histogram(url)
        tally = await closed_loop(url, uploads, concurrency, args.step, args.max_requests, args.timeout)
        level = {"concurrency": concurrency, **tally.summary(), **cpu_share(args.pid, *before)}
        level["server_side"] = server_view(histogram, server_histogram(url))
        levels.append(level)
        print(
            f"  ramp c={concurrency:<4} {level['throughput_ok_per_s']:8.2f} ok/s  "
            f"p99 {level['latency_ok_ms']['p99']} ms  statuses {level['by_status']}",
            flush=True,
        )
        saw_503 = tally.statuses.get(503, 0) > 0
        grew = best is None or level["throughput_ok_per_s"] > best["throughput_ok_per_s"] * (1 + args.growth)
        if best is None or level["throughput_ok_per_s"] > best["throughput_ok_per_s"]:
            best = level if not saw_503 or best is None else best
        if saw_503 or not grew:
            break
        concurrency *= 2
    assert best is not None
    return levels, best


async def run(args: argparse.Namespace, url: str, pid: int | None, uploads: list[Upload]) -> dict:
    t0 = time.perf_counter()
    rss: list[tuple[float, float]] = []
    load: list[tuple[float, float]] = []
    sampler = asyncio.create_task(sample_rss(pid, rss, t0, args.rss_every, load))
    try:
        print(f"ramp: {args.step:.0f} s per level, concurrency 1, 2, 4, ... up to {args.max_concurrency}")
        args.pid = pid  # the ramp reads the server's CPU time too
        levels, best = await ramp(args, url, uploads)
        rate = max(0.5, best["throughput_ok_per_s"] * args.hold_factor)
        print(
            f"saturation: {best['throughput_ok_per_s']} ok/s at concurrency {best['concurrency']}; "
            f"hold {args.hold:.0f} s open loop at {rate:.2f} req/s ({args.hold_factor}x)",
            flush=True,
        )
        hold_start = round(time.perf_counter() - t0, 1)
        before = (cpu_seconds(pid), time.process_time(), time.perf_counter())
        histogram = server_histogram(url)
        hold = await open_loop(url, uploads, rate, args.hold, args.max_inflight, args.timeout)
        hold_cpu = cpu_share(pid, *before)
        hold_server = server_view(histogram, server_histogram(url))
    finally:
        sampler.cancel()
    hold_summary = {
        "offered_rate_per_s": round(rate, 2),
        "factor": args.hold_factor,
        **hold.summary(),
        **hold_cpu,
        "server_side": hold_server,
    }
    in_hold = [value for at, value in rss if at >= hold_start]
    return {
        "machine": machine(),
        "url": url,
        "corpus": {
            "recordings": len(uploads),
            "formats": dict(Counter(u.mime for u in uploads)),
            "seconds_min": round(min(u.seconds for u in uploads), 1),
            "seconds_max": round(max(u.seconds for u in uploads), 1),
            "mib": round(sum(len(u.data) for u in uploads) / 2**20, 2),
        },
        "ramp": levels,
        "saturation": {
            "concurrency": best["concurrency"],
            "throughput_ok_per_s": best["throughput_ok_per_s"],
            "latency_ok_ms": best["latency_ok_ms"],
        },
        "hold": hold_summary,
        "rss_mib": {
            "samples": rss,
            "start": rss[0][1] if rss else None,
            "end": rss[-1][1] if rss else None,
            "max": max((v for _, v in rss), default=None),
            "hold_start": in_hold[0] if in_hold else None,
            "hold_end": in_hold[-1] if in_hold else None,
        },
        "load_average_1m": load_summary(load),
        "totals": {
            "sent": sum(lv["sent"] for lv in levels) + hold.sent,
            "answered": sum(lv["answered"] for lv in levels) + hold.answered,
            "transport_errors": sum(sum(lv["transport_errors"].values()) for lv in levels)
            + sum(hold.transport.values()),
        },
    }


def print_table(result: dict) -> None:
    rows = [(f"ramp c={lv['concurrency']}", lv) for lv in result["ramp"]] + [("hold", result["hold"])]
    print(
        f"\n{'phase':<12}{'sent':>7}{'answered':>9}{'ok/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'503%':>7}"
        "  cores srv/cli  statuses"
    )
    for name, row in rows:
        lat = row["latency_ok_ms"]
        print(
            f"{name:<12}{row['sent']:>7}{row['answered']:>9}{row['throughput_ok_per_s']:>8.2f}"
            f"{lat['p50'] or 0:>8.0f}{lat['p95'] or 0:>8.0f}{lat['p99'] or 0:>8.0f}"
            f"{100 * row['share_503']:>6.1f}%  {row.get('server_cores')}/{row.get('client_cores')}  "
            f"{row['by_status']} {row['transport_errors'] or ''}"
        )
    hold = result["hold"]
    print(
        f"hold: 503s {hold['by_status'].get('503', 0)} ({hold['refused_by']}), Retry-After "
        f"{hold['retry_after_on_503']}, client-side 503 latency ms {hold['latency_503_ms']}; "
        f"skipped at the in-flight cap {hold['skipped_at_inflight_cap']}"
    )
    print(f"hold, server-side latency by status: {hold['server_side']}")
    load = result["load_average_1m"]
    print(f"load average (1 min) during the run: min {load['min']} mean {load['mean']} max {load['max']}")
    rss, totals = result["rss_mib"], result["totals"]
    print(
        f"RSS MiB: start {rss['start']}  hold start {rss['hold_start']}  end {rss['end']}  max {rss['max']}"
    )
    print(
        f"requests sent {totals['sent']}  responses received {totals['answered']}  "
        f"transport errors {totals['transport_errors']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--bundle", type=Path, help="start `acula serve --bundle` on loopback and stop it after"
    )
    where.add_argument("--url", help="a running service (loopback only), e.g. http://127.0.0.1:8000")
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, for RSS from /proc")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="K=V",
        help="extra environment for the server started with --bundle (repeatable)",
    )
    parser.add_argument("--step", type=float, default=10.0, help="seconds per ramp level")
    parser.add_argument("--growth", type=float, default=0.10, help="throughput growth that counts as growing")
    parser.add_argument("--max-concurrency", type=int, default=256)
    parser.add_argument("--hold", type=float, default=300.0, help="seconds to hold the overload")
    parser.add_argument("--hold-factor", type=float, default=2.0, help="hold rate / saturation throughput")
    parser.add_argument("--max-inflight", type=int, default=512, help="open-loop cap on outstanding requests")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per ramp level")
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout per request, seconds")
    parser.add_argument("--per-source", type=int, default=8, help="recordings per dataset")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="longest recording used")
    parser.add_argument("--rss-every", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args(argv)
    if args.url and urlparse(args.url).hostname not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("only loopback URLs are allowed")
    return args


@contextmanager
def target(args: argparse.Namespace, workdir: Path):
    """(url, pid) of the service under test: the one given, or one started here for the run."""
    if args.url:
        yield args.url.rstrip("/"), args.pid
        return
    env = {"ACULA_LOG_JSON": "true", **dict(item.split("=", 1) for item in args.server_env)}
    with started_server(args.bundle, workdir / "server.log", env) as (url, pid):
        yield url, pid


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="acula-load-") as tmp:
        uploads = build_corpus(args.per_source, args.max_seconds, args.seed, Path(tmp))
        print(f"corpus: {len(uploads)} recordings, {Counter(u.mime for u in uploads)}")
        with target(args, Path(tmp)) as (url, pid):
            result = asyncio.run(run(args, url, pid, uploads))
            result["server_env"] = args.server_env
    print_table(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    totals = result["totals"]
    bad = [s for s in result["hold"]["by_status"] if s.startswith("5") and s != "503"]
    bad += [s for lv in result["ramp"] for s in lv["by_status"] if s.startswith("5") and s != "503"]
    if totals["sent"] != totals["answered"] or bad:
        print(f"FAIL: sent != answered, or server errors {sorted(set(bad))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
