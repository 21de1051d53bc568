"""The FastAPI application factory: routers, middleware, error handlers and the lifespan.

``create_app(settings)`` builds an app that loads its bundle at start-up (verify hashes, check the encoder
against the manifest, warm up every batch size) before ``/readyz`` turns 200, and on shutdown turns readiness
off first, then waits for in-flight requests. The app never imports torch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from acula.service import __version__
from acula.service.api import embed, health, model, predict, reports
from acula.service.api.errors import install_error_handlers
from acula.service.api.middleware import (
    AdmissionMiddleware,
    AuthMiddleware,
    BodyLimitMiddleware,
    RequestContextMiddleware,
)
from acula.service.core.pipeline import InferencePipeline
from acula.service.metrics import Metrics
from acula.service.runtime import Runtime
from acula.service.settings import Settings

DESCRIPTION = """\
Predictions, embeddings and similar clinical reports for auscultation recordings (heart, lung, cough).
Research and decision support only: not a diagnostic device. Errors are RFC 9457 problem+json.
"""


def create_app(
    settings: Settings | None = None,
    load: Callable[[Settings], InferencePipeline] = InferencePipeline.from_settings,
) -> FastAPI:
    """A ready-to-serve app for ``settings.bundle`` (``Settings()`` reads the ``ACULA_*`` environment).

    ``load`` builds the pipeline at start-up; tests pass one that wraps the real encoder in a double."""
    settings = settings or Settings()
    metrics = Metrics()
    runtime = Runtime(settings, metrics, load)

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
    routers = [module.router for module in (predict, reports, embed, model, health)]
    for router in routers:
        app.include_router(router)
    install_error_handlers(app, retry_after_s=settings.retry_after_s)
    # Added last = outermost. The request context wraps everything, so every refusal carries the request id
    # and is logged and counted; then authentication, admission and the body limit, each before the body.
    app.add_middleware(BodyLimitMiddleware, runtime=runtime)
    app.add_middleware(AdmissionMiddleware, runtime=runtime)
    app.add_middleware(AuthMiddleware, runtime=runtime)
    # Every path the app serves (its own, the docs', the routers'), to label requests no route handled.
    every_route = [*app.routes, *(route for router in routers for route in router.routes)]
    routes = frozenset(path for route in every_route if isinstance(path := getattr(route, "path", None), str))
    app.add_middleware(RequestContextMiddleware, runtime=runtime, routes=routes)
    return app
