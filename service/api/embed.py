"""``POST /embed``: the pooled window embedding and the joint-space embedding of one recording."""

from __future__ import annotations

from fastapi import APIRouter, Request

from acula.service.api.deps import RuntimeDep, UploadBytes
from acula.service.api.schemas import EmbedResponse, embed_response, problem_responses
from acula.service.api.upload import UPLOAD_OPENAPI

router = APIRouter(tags=["inference"])


@router.post(
    "/embed",
    response_model=EmbedResponse,
    responses=problem_responses(401, 413, 415, 422, 503, 504),
    openapi_extra=UPLOAD_OPENAPI,
    summary="Embed a recording (probe space and joint space)",
)
async def embed(request: Request, runtime: RuntimeDep, data: UploadBytes) -> EmbedResponse:
    prediction = await runtime.run(data, None)
    request.state.audio_seconds = round(prediction.audio.duration_s, 3)
    request.state.windows = prediction.window_count
    return embed_response(runtime.pipeline.manifest, prediction)
