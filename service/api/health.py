"""Liveness, readiness and metrics: unauthenticated, so probes and scrapers need no key.

``/healthz`` answers while the process serves HTTP at all; ``/readyz`` only once the bundle is verified and
warmed up, and no longer once shutdown has begun, so the load balancer stops sending before we stop serving.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from acula.service.api.deps import RuntimeDep
from acula.service.api.errors import ApiError
from acula.service.api.schemas import HealthResponse, problem_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=HealthResponse, responses=problem_responses(503), summary="Readiness")
async def readyz(runtime: RuntimeDep) -> HealthResponse:
    if not runtime.ready:
        raise ApiError("not_ready", "the model is loading, warming up or shutting down")
    return HealthResponse(status="ok")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)
