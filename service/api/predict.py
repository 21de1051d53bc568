"""``POST /predict``: task outputs for one recording, optionally similar reports and per-window scores."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from acula.service.api.deps import RuntimeDep, UploadBytes
from acula.service.api.errors import ApiError
from acula.service.api.schemas import PredictResponse, predict_response, problem_responses
from acula.service.api.upload import UPLOAD_OPENAPI

router = APIRouter(tags=["inference"])


def split_tasks(values: list[str] | None) -> list[str]:
    """``?tasks=a,b`` and ``?tasks=a&tasks=b`` both mean tasks a and b; none means all."""
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 413, 415, 422, 503, 504),
    openapi_extra=UPLOAD_OPENAPI,
    summary="Predict every (or the chosen) task for a recording",
)
async def predict(
    request: Request,
    runtime: RuntimeDep,
    data: UploadBytes,
    tasks: Annotated[
        list[str] | None, Query(description="Task names (repeat or comma-separate); all if absent.")
    ] = None,
    top_k: Annotated[int, Query(ge=0, description="Also return the k most similar reports.")] = 0,
    per_window: Annotated[bool, Query(description="Also return the task outputs of every window.")] = False,
) -> PredictResponse:
    if top_k > runtime.settings.max_top_k:
        raise ApiError("invalid_request", f"top_k is at most {runtime.settings.max_top_k}")
    prediction = await runtime.run(data, split_tasks(tasks), top_k=top_k, per_window=per_window)
    request.state.audio_seconds = round(prediction.audio.duration_s, 3)
    request.state.windows = prediction.window_count
    return predict_response(runtime.pipeline.manifest, prediction)
