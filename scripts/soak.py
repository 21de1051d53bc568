"""Soak test: hold a steady 70 % of saturation for 30 minutes and report RSS growth and latency drift.

A leak or a slowly filling queue never shows in a 60-second benchmark; it shows as a server whose RSS or
p99 at minute 30 is above minute 1 at the same offered load. The load is open loop (requests start on a
clock, see ``loadgen.py``) in windows of ``--window`` seconds; each window reports its own throughput and
latency percentiles and the RSS at its end. The first window is warm-up: growth and drift are measured from
the end of it (start-up allocations and the ramp's backlog are not leaks), growth also as a least-squares
slope in MiB per hour.

Usage::

    .venv/bin/python scripts/soak.py --bundle models/acula-default --out soak.json            # ramps first
    .venv/bin/python scripts/soak.py --url http://127.0.0.1:8000 --pid 1234 --rate 20 --duration 1800

Exit status 1 when a request got no response (sent != answered) or on a 5xx other than 503.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402  (the sibling script: corpus, server start, open loop, RSS)


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) points, in MiB per hour."""
    if len(points) < 3:
        return None
    seconds, values = np.asarray(points, dtype=float).T
    return round(float(np.polyfit(seconds, values, 1)[0]) * 3600.0, 2)


async def soak(args: argparse.Namespace, url: str, pid: int | None, uploads: list[loadgen.Upload]) -> dict:
    saturation = None
    if args.rate is None:
        ramp_args = argparse.Namespace(**{**vars(args), "step": args.ramp_step, "pid": pid})
        _, best = await loadgen.ramp(ramp_args, url, uploads)
        saturation = best["throughput_ok_per_s"]
    rate = args.rate if args.rate is not None else max(0.5, saturation * args.fraction)
    print(f"soak: {rate:.2f} req/s for {args.duration:.0f} s in {args.window:.0f} s windows", flush=True)
    t0 = time.perf_counter()
    windows = []
    rss_points: list[tuple[float, float]] = []
    while time.perf_counter() - t0 < args.duration:
        length = min(args.window, args.duration - (time.perf_counter() - t0))
        if length * rate < 10:  # a tail too short to measure anything: stop here
            break
        histogram = loadgen.server_histogram(url)
        tally = await loadgen.open_loop(url, uploads, rate, length, args.max_inflight, args.timeout)
        at = round(time.perf_counter() - t0, 1)
        rss = loadgen.rss_mib(pid)
        if rss is not None:
            rss_points.append((at, round(rss, 1)))
        summary = {
            "t_s": at,
            "rss_mib": rss and round(rss, 1),
            "load_1m": round(os.getloadavg()[0], 2),
            **tally.summary(),
            "server_side": loadgen.server_view(histogram, loadgen.server_histogram(url)),
        }
        windows.append(summary)
        lat = summary["latency_ok_ms"]
        print(
            f"  t={at:7.0f}s ok/s {summary['throughput_ok_per_s']:7.2f} p50 {lat['p50']} p99 {lat['p99']} ms "
            f"(server p99 <= {summary['server_side'].get('200', {}).get('p99_at_most_s')} s) "
            f"RSS {summary['rss_mib']} MiB  load {summary['load_1m']}  {summary['by_status']}",
            flush=True,
        )
    # The first window is warm-up (fresh connections, a backlog left by the ramp): drift is measured from the
    # second, as RSS growth is.
    first, last = windows[1 if len(windows) > 2 else 0], windows[-1]
    totals = Counter()
    for window in windows:
        totals["sent"] += window["sent"]
        totals["answered"] += window["answered"]
        totals["transport_errors"] += sum(window["transport_errors"].values())
        for status, count in window["by_status"].items():
            totals[f"status_{status}"] += count
    return {
        "machine": loadgen.machine(),
        "url": url,
        "saturation_ok_per_s": saturation,
        "offered_rate_per_s": round(rate, 2),
        "fraction": args.fraction if args.rate is None else None,
        "duration_s": args.duration,
        "windows": windows,
        "rss_mib": {
            "after_warm_up": first["rss_mib"],
            "end": last["rss_mib"],
            "growth": None if first["rss_mib"] is None else round(last["rss_mib"] - first["rss_mib"], 1),
            "slope_mib_per_hour": slope_per_hour(rss_points[1:] if len(rss_points) > 2 else rss_points),
        },
        "latency_drift_ms": {
            q: {"first": first["latency_ok_ms"][q], "last": last["latency_ok_ms"][q]} for q in ("p50", "p99")
        },
        "load_average_1m": {
            "min": min(w["load_1m"] for w in windows),
            "mean": round(sum(w["load_1m"] for w in windows) / len(windows), 2),
            "max": max(w["load_1m"] for w in windows),
        },
        "totals": dict(totals),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--bundle", type=Path, help="start `acula serve --bundle` on loopback and stop it after"
    )
    where.add_argument("--url", help="a running service (loopback only)")
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, for RSS from /proc")
    parser.add_argument("--server-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of steady load")
    parser.add_argument("--fraction", type=float, default=0.7, help="share of the measured saturation")
    parser.add_argument("--rate", type=float, help="requests/s; skips the ramp")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    parser.add_argument("--ramp-step", type=float, default=10.0, help="seconds per ramp level")
    parser.add_argument("--growth", type=float, default=0.10)
    parser.add_argument("--max-concurrency", type=int, default=256)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--max-inflight", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--per-source", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.url and loadgen.urlparse(args.url).hostname not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("only loopback URLs are allowed")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="acula-soak-") as tmp:
        uploads = loadgen.build_corpus(args.per_source, args.max_seconds, args.seed, Path(tmp))
        with loadgen.target(args, Path(tmp)) as (url, pid):
            result = asyncio.run(soak(args, url, pid, uploads))
    rss, drift, totals = result["rss_mib"], result["latency_drift_ms"], result["totals"]
    print(
        f"\nRSS MiB after the warm-up window {rss['after_warm_up']}, at the end {rss['end']} "
        f"(growth {rss['growth']}, slope {rss['slope_mib_per_hour']} MiB/h)"
    )
    print(
        f"latency p50 {drift['p50']['first']} -> {drift['p50']['last']} ms, "
        f"p99 {drift['p99']['first']} -> {drift['p99']['last']} ms"
    )
    print(f"requests sent {totals['sent']}  responses received {totals['answered']}  {totals}")
    print(f"load average (1 min) at window ends: {result['load_average_1m']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    server_errors = [key for key in totals if key.startswith("status_5") and key != "status_503"]
    return 1 if totals["sent"] != totals["answered"] or server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
