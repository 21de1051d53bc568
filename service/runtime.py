"""The service's running state: the pipeline, the batcher, the worker pools, admission, readiness, metrics.

Routes stay thin by calling the coroutines here. Decoding and the light CPU stages (probes, search) run in a
bounded thread pool, inference in the batcher's own thread: the event loop only moves bytes and futures.
Readiness is false until the bundle is verified, the encoder checked against the manifest and every batch size
warmed up, and it turns false again first thing on shutdown.

The runtime owns the one :class:`~acula.service.core.admission.Admission` (the HTTP middleware enters it) but
no deadline of its own: the middleware's request deadline covers every stage here, and cancels a request
still waiting for a decode worker (its decode never starts) or for a batch (the batcher drops it).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from acula.service.core.admission import Admission
from acula.service.core.applicability import ClientContext, ProbeRequest
from acula.service.core.batcher import Batcher, BatchStats
from acula.service.core.errors import InvalidQuery, NotReady
from acula.service.core.pipeline import InferencePipeline, Prediction
from acula.service.index import ReportHit
from acula.service.metrics import Metrics
from acula.service.settings import Settings

log = logging.getLogger("acula.runtime")
T = TypeVar("T")


class Runtime:
    """Created with the app; :meth:`start` and :meth:`stop` are called from its lifespan."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        load: Callable[[Settings], InferencePipeline] = InferencePipeline.from_settings,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.api_keys = settings.resolved_api_keys()
        self.admission = Admission(settings.max_inference_requests)
        self.ready = False
        self.cut_at_shutdown = 0  # requests cancelled because the graceful shutdown timeout ran out
        self._load = load  # tests pass a loader that wraps the real backend in a double
        self._pipeline: InferencePipeline | None = None
        self._batcher: Batcher | None = None
        self._cpu = ThreadPoolExecutor(max_workers=settings.decode_workers, thread_name_prefix="acula-cpu")

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Verify, load and warm up the bundle off the event loop; then start the batcher and turn ready."""
        settings = self.settings
        pipeline = await asyncio.to_thread(self._load, settings)
        if settings.warm_up:
            await asyncio.to_thread(pipeline.warm_up)
        self._pipeline = pipeline
        manifest = pipeline.manifest
        self.metrics.model_info.info(
            {"name": manifest.name, "version": manifest.version, "provider": pipeline.backend.providers[0]}
        )
        self._batcher = Batcher(
            self._timed_run(pipeline),
            pipeline.max_batch_size,
            settings.max_wait_ms,
            BatchStats(on_batch=self.metrics.on_batch, on_queue_depth=self.metrics.queue_depth.set),
            workers=settings.inference_workers,
        )
        self._batcher.start()
        self.ready = True
        log.info(
            "model ready",
            extra={
                "model": manifest.name,
                "model_version": manifest.version,
                "provider": pipeline.backend.providers,
                "threads": settings.intra_op_threads,
                "inference_workers": settings.inference_workers,
                "max_batch_size": pipeline.max_batch_size,
                "max_inference_requests": settings.max_inference_requests,
            },
        )

    async def stop(self) -> None:
        """Readiness off first, then let admitted requests finish, then release threads."""
        self.ready = False
        if self._batcher is not None:
            await self._batcher.stop()
        self._cpu.shutdown(wait=True)

    def _timed_run(
        self, pipeline: InferencePipeline
    ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        histogram = self.metrics.stage_latency.labels(stage="inference")

        def run(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            started = time.perf_counter()
            try:
                return pipeline.backend.run(windows)
            finally:
                histogram.observe(time.perf_counter() - started)

        return run

    # --- accessors ----------------------------------------------------------------------------------------
    @property
    def pipeline(self) -> InferencePipeline:
        # Not tied to ``ready``: while draining, requests that still arrive are served, not refused.
        if self._pipeline is None:
            raise NotReady("the model is not loaded yet")
        return self._pipeline

    @property
    def queue_depth(self) -> int:
        return self._batcher.depth if self._batcher is not None else 0

    # --- stages -------------------------------------------------------------------------------------------
    async def _in_pool(self, stage: str, fn: Callable[..., T], *args: object) -> tuple[T, float]:
        started = time.perf_counter()
        context = contextvars.copy_context()  # so log lines from the worker thread carry the request id
        result = await asyncio.get_running_loop().run_in_executor(
            self._cpu, functools.partial(context.run, fn, *args)
        )
        seconds = time.perf_counter() - started
        self.metrics.stage_latency.labels(stage=stage).observe(seconds)
        return result, seconds * 1000.0

    async def encode(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Windows through the batcher; returns embeddings, joints and queue/inference milliseconds."""
        if self._batcher is None:
            raise NotReady("the batcher is not running")
        started = time.perf_counter()
        embeddings, joints, queued = await self._batcher.submit(windows)
        total = time.perf_counter() - started
        self.metrics.stage_latency.labels(stage="queue").observe(queued)
        return embeddings, joints, {"queue": queued * 1000.0, "inference": (total - queued) * 1000.0}

    async def run(
        self,
        data: bytes,
        tasks: list[str] | None,
        top_k: int = 0,
        per_window: bool = False,
        context: ClientContext | None = None,
    ) -> Prediction:
        """The whole pipeline for one upload, as :meth:`InferencePipeline.predict` runs it for the CLI.

        ``tasks=None`` skips the probes (``/embed``); an empty list runs every probe that applies to the
        upload (``context``: what the client states about it, e.g. its sound type). The request was
        admitted before its body was read (``AdmissionMiddleware``); options are checked before decoding.
        """
        pipeline = self.pipeline
        selected = pipeline.check_request(tasks, top_k, context) if tasks is not None else None
        return await self._run(pipeline, data, selected, top_k, per_window)

    async def _run(
        self,
        pipeline: InferencePipeline,
        data: bytes,
        selected: ProbeRequest | None,
        top_k: int,
        per_window: bool,
    ) -> Prediction:
        started = time.perf_counter()
        (audio, windows), decode_ms = await self._in_pool("decode", pipeline.decode_and_cut, data)
        embeddings, joints, encode_ms = await self.encode(windows)
        prediction, _ = await self._in_pool(
            "probes", pipeline.summarise, audio, embeddings, joints, selected, top_k, per_window
        )
        if "search" in prediction.timings_ms:
            self.metrics.stage_latency.labels(stage="search").observe(
                prediction.timings_ms["search"] / 1000.0
            )
        prediction.timings_ms = {
            "decode": decode_ms,
            **encode_ms,
            **prediction.timings_ms,
            "total": (time.perf_counter() - started) * 1000.0,
        }
        return prediction

    async def search_text(self, query: str, k: int) -> tuple[list[ReportHit], dict[str, float]]:
        """Free-text report search through the bundle's text encoder (only when the bundle has one)."""
        pipeline = self.pipeline
        if not query.strip():
            raise InvalidQuery("the query is empty")
        started = time.perf_counter()
        hits, search_ms = await self._in_pool("search", pipeline.search_text, query, k)
        return hits, {"search": search_ms, "total": (time.perf_counter() - started) * 1000.0}
