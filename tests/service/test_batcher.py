"""The batcher: cross-request batching, splitting of long jobs, admission control, errors and cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from acula.service.core.batcher import Batcher, BatchStats
from acula.service.core.errors import NotReady


class Encoder:
    """A real computation per row (sum and max), recording batch sizes, the thread each ran on and the most
    batches computed at the same time. ``delay``: seconds per call, or a function of the batch."""

    def __init__(self, delay: float | Callable[[np.ndarray], float] = 0.0) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.most_at_once = 0
        self._running = 0
        self._lock = threading.Lock()

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self.batches.append(len(windows))
            self.threads.add(threading.current_thread().name)
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        try:
            delay = self.delay(windows) if callable(self.delay) else self.delay
            if delay:
                time.sleep(delay)
            return windows.sum(axis=1, keepdims=True), windows.max(axis=1, keepdims=True)
        finally:
            with self._lock:
                self._running -= 1


def _windows(n: int, offset: float) -> np.ndarray:
    return (np.arange(n * 4, dtype=np.float32).reshape(n, 4) + offset).astype(np.float32)


async def _with_batcher(encoder: Encoder, **kwargs: float) -> Batcher:
    options = {"max_batch_size": 8, "max_wait_ms": 20.0, **kwargs}
    batcher = Batcher(encoder, int(options["max_batch_size"]), float(options["max_wait_ms"]))
    batcher.start()
    return batcher


def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    encoder = Encoder()

    async def main() -> None:
        batcher = await _with_batcher(encoder)
        inputs = [_windows(2, 100.0 * i) for i in range(4)]
        results = await asyncio.gather(*(batcher.submit(w) for w in inputs))
        await batcher.stop()
        for windows, (sums, maxima, queued) in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(sums[:, 0], windows.sum(axis=1))
            np.testing.assert_array_equal(maxima[:, 0], windows.max(axis=1))
            assert queued >= 0

    asyncio.run(main())
    assert encoder.batches == [8]  # four requests of two windows, one encoder call
    assert all(name.startswith("acula-infer") for name in encoder.threads)


def test_long_recording_is_split_over_batches_in_order() -> None:
    encoder = Encoder()

    async def main() -> None:
        batcher = await _with_batcher(encoder, max_batch_size=4)
        windows = _windows(10, 0.0)
        sums, _, _ = await batcher.submit(windows)
        await batcher.stop()
        np.testing.assert_array_equal(sums[:, 0], windows.sum(axis=1))

    asyncio.run(main())
    assert encoder.batches == [4, 4, 2]


def test_queue_depth_counts_waiting_requests_and_a_cancelled_one_is_never_computed() -> None:
    """The batcher refuses nothing (admission, before the body, bounds how many requests exist); a request
    whose caller went away (its deadline, a disconnect) leaves the queue without being computed."""
    encoder = Encoder(delay=0.2)
    stats: list[int] = []

    async def main() -> None:
        batcher = Batcher(encoder, 1, 1.0, stats=BatchStats(on_queue_depth=stats.append))
        batcher.start()
        first = [asyncio.ensure_future(batcher.submit(_windows(1, i))) for i in range(3)]
        await asyncio.sleep(0.01)
        abandoned = asyncio.ensure_future(batcher.submit(_windows(1, 9.0)))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        await asyncio.gather(*first)
        assert batcher.depth == 0
        await batcher.stop()

    asyncio.run(main())
    assert max(stats) == 4 and stats[-1] == 0
    assert sum(encoder.batches) == 3, encoder.batches


def test_encoder_failure_reaches_every_caller_of_that_batch_and_batcher_survives() -> None:
    calls = {"n": 0}

    def flaky(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("encoder exploded")
        return windows[:, :1], windows[:, :1]

    async def main() -> None:
        batcher = Batcher(flaky, 8, 20.0)
        batcher.start()
        results = await asyncio.gather(
            batcher.submit(_windows(1, 0)), batcher.submit(_windows(1, 1)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        sums, _, _ = await batcher.submit(_windows(1, 5))
        assert sums.shape == (1, 1)
        await batcher.stop()

    asyncio.run(main())


def test_cancelled_request_does_not_block_others() -> None:
    encoder = Encoder()

    async def main() -> None:
        batcher = await _with_batcher(encoder, max_wait_ms=500.0)  # long: cancel lands before the batch runs
        doomed = asyncio.ensure_future(batcher.submit(_windows(3, 0)))
        kept = asyncio.ensure_future(batcher.submit(_windows(2, 7)))
        await asyncio.sleep(0.005)
        doomed.cancel()
        sums, _, _ = await kept
        assert sums.shape == (2, 1)
        assert batcher.depth == 0
        await batcher.stop()

    asyncio.run(main())
    assert encoder.batches == [2]  # the cancelled job's windows were never computed


def test_submit_before_start_is_not_ready() -> None:
    async def main() -> None:
        with pytest.raises(NotReady):
            await Batcher(Encoder(), 4, 1.0).submit(_windows(1, 0))

    asyncio.run(main())


def test_stop_waits_for_admitted_requests() -> None:
    encoder = Encoder(delay=0.1)

    async def main() -> None:
        batcher = await _with_batcher(encoder, max_wait_ms=1.0)
        pending = asyncio.ensure_future(batcher.submit(_windows(1, 0)))
        await asyncio.sleep(0.01)
        await batcher.stop()
        assert pending.done() and pending.result()[0].shape == (1, 1)

    asyncio.run(main())


def test_workers_run_batches_at_once_and_rows_come_back_in_order() -> None:
    """With two workers, a recording split over batches that finish out of order still gets its rows in
    order, and two batches really are computed at the same time."""
    # The first batch (window values from 0) is the slowest: later batches overtake it.
    encoder = Encoder(delay=lambda windows: 0.15 if windows[0, 0] == 0 else 0.02)

    async def main() -> None:
        batcher = Batcher(encoder, 4, 1.0, workers=2)
        batcher.start()
        windows = _windows(10, 0.0)
        sums, maxima, _ = await batcher.submit(windows)
        await batcher.stop()
        np.testing.assert_array_equal(sums[:, 0], windows.sum(axis=1))
        np.testing.assert_array_equal(maxima[:, 0], windows.max(axis=1))

    asyncio.run(main())
    assert encoder.most_at_once == 2


def test_one_worker_never_overlaps_batches() -> None:
    encoder = Encoder(delay=0.02)

    async def main() -> None:
        batcher = Batcher(encoder, 2, 1.0, workers=1)
        batcher.start()
        await asyncio.gather(*(batcher.submit(_windows(3, 10.0 * i)) for i in range(4)))
        await batcher.stop()

    asyncio.run(main())
    assert encoder.most_at_once == 1 and sum(encoder.batches) == 12


def test_a_lone_recording_is_shared_among_idle_workers() -> None:
    """At low load the windows of one recording go to every idle worker at once (lower latency); under load
    batches fill up to max_batch_size."""
    encoder = Encoder(delay=0.05)

    async def main() -> None:
        batcher = Batcher(encoder, 8, 1.0, workers=2)
        batcher.start()
        windows = _windows(6, 0.0)
        sums, _, _ = await batcher.submit(windows)
        np.testing.assert_array_equal(sums[:, 0], windows.sum(axis=1))
        assert encoder.batches == [3, 3] and encoder.most_at_once == 2  # split in two, side by side
        encoder.batches.clear()
        await asyncio.gather(*(batcher.submit(_windows(4, 10.0 * i)) for i in range(8)))
        await batcher.stop()

    asyncio.run(main())
    assert max(encoder.batches) == 8 and sum(encoder.batches) == 32  # under load: full batches


def test_next_batch_is_formed_while_the_worker_computes() -> None:
    """A worker finds its next batch ready when it finishes (it does not idle until the event loop forms
    one); at most one batch waits per worker, and a batch's wait for its worker counts as queue time."""
    gate = threading.Event()
    encoder = Encoder(delay=lambda windows: 0.0 if gate.wait(5) else 0.0)

    async def main() -> None:
        batcher = Batcher(encoder, 2, 1.0, workers=1)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(_windows(2, 0.0)))
        await asyncio.sleep(0.05)  # the first batch is computing (held by the gate)
        later = [asyncio.ensure_future(batcher.submit(_windows(2, 10.0 * i))) for i in (1, 2)]
        await asyncio.sleep(0.05)
        assert batcher.in_flight == 2  # the running batch and the next; the third waits for a slot
        gate.set()
        results = await asyncio.gather(first, *later)
        await batcher.stop()
        assert results[1][2] >= 0.04  # waited for the worker behind the gated batch: queue time
        assert batcher.in_flight == 0

    asyncio.run(main())
    assert encoder.batches == [2, 2, 2] and encoder.most_at_once == 1
