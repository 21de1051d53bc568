"""Dynamic batching across requests.

Requests hand their windows to :meth:`Batcher.submit`. One asyncio task collects windows from the queue
until ``max_batch_size`` windows are waiting or the oldest has waited ``max_wait_ms``, runs the encoder on
that batch in a worker thread (the event loop never blocks on inference), and hands each request its rows.
A long recording may be split over several batches; a batch may hold windows of many requests. While one
batch runs, the next fills, so under load batches grow on their own.

Up to ``workers`` batches run at once, each in its own thread on the same encoder (an onnxruntime session
may be run from several threads): on a small CPU host several batches of one intra-op thread each keep the
cores busier than one batch of several threads (measured in docs/PERFORMANCE.md). Each worker also has its
next batch formed while it computes the current one (``BATCHES_PER_WORKER``): a worker that finishes takes
the next batch from its executor's queue at once instead of idling until the event loop, busy parsing
uploads, gets round to forming it. When workers are idle, the waiting windows are shared among them, so a
lone recording still runs on every worker at once; under load each batch fills up to ``max_batch_size``.
Rows of a recording split over batches that finish out of order are put back in order.

The batcher does not limit how many requests wait in it: the service's one admission
(:mod:`acula.service.core.admission`) already bounds how many requests exist at all. A request whose
caller went away (deadline, disconnect) is dropped before its windows are computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from acula.service.core.errors import NotReady

RunBatch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# Batches formed per worker: the one it computes and the next, ready for the moment it is free, so that the
# cores stay busy while the event loop parses uploads (what one more batch bought: docs/PERFORMANCE.md).
BATCHES_PER_WORKER = 2


@dataclass
class BatchStats:
    """Callbacks for metrics; the batcher itself stays free of Prometheus."""

    on_batch: Callable[[int], None] = lambda size: None
    on_queue_depth: Callable[[int], None] = lambda depth: None


@dataclass
class _Job:
    windows: np.ndarray
    future: asyncio.Future[tuple[np.ndarray, np.ndarray, float]]
    enqueued: float
    taken: int = 0  # windows already put into a batch
    computed: int = 0  # windows whose results are back
    parts: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # by first window index
    first_batch_at: float | None = None

    @property
    def remaining(self) -> int:
        return len(self.windows) - self.taken

    def add_part(self, first: int, embeddings: np.ndarray, joints: np.ndarray, started: float) -> None:
        """Rows ``first..`` are computed by a batch that started computing at ``started``; completes the
        future once every window's rows are back. Queue time ends when the job's first batch started."""
        self.first_batch_at = started if self.first_batch_at is None else min(self.first_batch_at, started)
        self.parts[first] = (embeddings, joints)
        self.computed += len(embeddings)
        if self.computed < len(self.windows) or self.future.done():
            return
        ordered = [self.parts[key] for key in sorted(self.parts)]
        queued = self.first_batch_at - self.enqueued
        self.future.set_result(
            (
                np.concatenate([part[0] for part in ordered]),
                np.concatenate([part[1] for part in ordered]),
                queued,
            )
        )


class Batcher:
    """Owns the inference threads; start with :meth:`start`, stop with :meth:`stop` (drains first)."""

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_size: int,
        max_wait_ms: float,
        stats: BatchStats | None = None,
        workers: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.stats = stats or BatchStats()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._pending: deque[_Job] = deque()
        self._admitted = 0
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="acula-infer")
        self._slots: asyncio.Semaphore | None = None  # created on the running loop by start()
        self._running: set[asyncio.Task[None]] = set()
        self._busy = 0  # batches formed and not finished (a task leaves _running a little after that)
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Requests currently inside the batcher (queued or being computed)."""
        return self._admitted

    @property
    def in_flight(self) -> int:
        """Batches formed and not finished: computing, or waiting for their worker to be free."""
        return self._busy

    def start(self) -> None:
        self._slots = asyncio.Semaphore(self.workers * BATCHES_PER_WORKER)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="acula-batcher")

    async def stop(self) -> None:
        """Stop after the requests already admitted have their results."""
        while self._admitted and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Embed ``windows``; returns ``(embeddings, joints, queue_seconds)``."""
        if self._task is None or self._task.done():
            raise NotReady("the inference batcher is not running")
        loop = asyncio.get_running_loop()
        job = _Job(windows=windows, future=loop.create_future(), enqueued=time.perf_counter())
        self._admitted += 1
        self.stats.on_queue_depth(self._admitted)
        try:
            self._queue.put_nowait(job)
            return await job.future
        finally:
            self._admitted -= 1
            self.stats.on_queue_depth(self._admitted)

    def _waiting_windows(self) -> int:
        return sum(job.remaining for job in self._pending)

    async def _collect(self) -> None:
        """Fill ``_pending`` until a batch is full or the oldest job has waited ``max_wait``."""
        if not self._pending:
            self._pending.append(await self._queue.get())
        deadline = self._pending[0].enqueued + self.max_wait
        while self._waiting_windows() < self.max_batch_size:
            while not self._queue.empty() and self._waiting_windows() < self.max_batch_size:
                self._pending.append(self._queue.get_nowait())
            remaining = deadline - time.perf_counter()
            if self._waiting_windows() >= self.max_batch_size or remaining <= 0:
                break
            try:
                # asyncio.timeout, not wait_for: no extra task per wait (it showed in the loop's profile).
                async with asyncio.timeout(remaining):
                    self._pending.append(await self._queue.get())
            except TimeoutError:
                break

    def _batch_limit(self) -> int:
        """``max_batch_size``, or less when other workers are idle: their share of the waiting windows."""
        free_workers = max(1, self.workers - self._busy)  # this batch's worker included
        return max(1, min(self.max_batch_size, -(-self._waiting_windows() // free_workers)))

    def _take_batch(self, limit: int) -> tuple[np.ndarray, list[tuple[_Job, int, int]]]:
        """At most ``limit`` windows for one batch, oldest job first, and which job owns which rows of it:
        (job, first window of the job in this batch, count)."""
        chunks, owners, size = [], [], 0
        for job in self._pending:
            if size >= limit:
                break
            count = min(job.remaining, limit - size)
            if count <= 0:
                continue
            chunks.append(job.windows[job.taken : job.taken + count])
            owners.append((job, job.taken, count))
            job.taken += count
            size += count
        return np.concatenate(chunks) if len(chunks) > 1 else chunks[0], owners

    async def _loop(self) -> None:
        assert self._slots is not None
        while True:
            await self._slots.acquire()  # a worker is free or about to be: fill its (next) batch
            try:
                await self._collect()
            except BaseException:
                self._slots.release()
                raise
            # Jobs whose callers went away (client disconnected, timeout) are dropped before computing.
            self._pending = deque(job for job in self._pending if not job.future.done())
            if not self._pending:
                self._slots.release()
                continue
            batch, owners = self._take_batch(self._batch_limit())
            self._busy += 1
            self._pending = deque(job for job in self._pending if job.remaining > 0)
            task = asyncio.get_running_loop().create_task(self._run(batch, owners))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: np.ndarray, owners: list[tuple[_Job, int, int]]) -> None:
        """One batch in a worker thread (first waiting for one to be free, if it was formed ahead), then each
        owner's rows; frees its slot when done."""
        assert self._slots is not None
        try:
            loop = asyncio.get_running_loop()
            started, embeddings, joints = await loop.run_in_executor(self._executor, self._compute, batch)
        except Exception as exc:  # the encoder failed: every job in this batch gets the error
            for job, _, _ in owners:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._busy -= 1
            self._slots.release()
        self.stats.on_batch(len(batch))
        row = 0
        for job, first, count in owners:
            job.add_part(first, embeddings[row : row + count], joints[row : row + count], started)
            row += count

    def _compute(self, batch: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """In the worker thread: when the batch really started (it may have waited for the worker), and its
        rows."""
        started = time.perf_counter()
        embeddings, joints = self._run_batch(batch)
        return started, embeddings, joints
