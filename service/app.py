"""The FastAPI application factory: routers, middleware, error handlers and the lifespan.

``create_app(settings)`` builds an app that loads its bundle at start-up (verify hashes, check the encoder
against the manifest, warm up every batch size) before ``/readyz`` turns 200, and on shutdown turns readiness
off first, then waits for in-flight requests. The app never imports torch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from acula.service import __version__
from acula.service.api import embed, health, model, predict, reports
from acula.service.api.errors import install_error_handlers
from acula.service.api.middleware import AdmissionMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from acula.service.metrics import Metrics
from acula.service.runtime import Runtime
from acula.service.settings import Settings

DESCRIPTION = """\
Predictions, embeddings and similar clinical reports for auscultation recordings (heart, lung, cough).
Research and decision support only: not a diagnostic device. Errors are RFC 9457 problem+json.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve app for ``settings.bundle`` (``Settings()`` reads the ``ACULA_*`` environment)."""
    settings = settings or Settings()
    metrics = Metrics()
    runtime = Runtime(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="acula",
        version=__version__,
        description=DESCRIPTION,
        root_path=settings.root_path,
        lifespan=lifespan,
        redirect_slashes=False,  # one spelling per route: /metrics is /metrics, not a redirect from /metrics/
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = runtime
    routers = (predict, reports, embed, model, health)
    for module in routers:
        app.include_router(module.router)
    install_error_handlers(app, retry_after_s=settings.retry_after_s)
    # Added last = outermost: the request context wraps admission and the body limit, so their 503s and 413s
    # carry the request id and are logged and counted; admission refuses before the body limit reads a byte.
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, body_timeout_s=settings.body_timeout_s
    )
    app.add_middleware(
        AdmissionMiddleware,
        limit=settings.admission_limit,
        retry_after_s=settings.retry_after_s,
        metrics=metrics,
        routes=frozenset(
            getattr(route, "path", "")
            for module in routers
            for route in module.router.routes
            if "POST" in (getattr(route, "methods", None) or ())
        ),
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics, client_id_header=settings.client_id_header)
    return app
