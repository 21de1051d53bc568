"""``POST /similar-reports``: the training-side reports closest to a recording (or to a text query).

Texts are returned only when the manifest marks the corpus de-identified; otherwise ids, scores, datasets and
labels only. The bundle, not the request, decides.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile

from acula.service.api.deps import Authorised, RuntimeDep
from acula.service.api.errors import ApiError
from acula.service.api.schemas import SimilarReportsResponse, problem_responses, similar_reports_response
from acula.service.api.upload import RAW_AUDIO_OPENAPI, is_raw_audio
from acula.service.core.errors import NoReportIndex

router = APIRouter(tags=["reports"], dependencies=[Authorised])


@router.post(
    "/similar-reports",
    response_model=SimilarReportsResponse,
    responses=problem_responses(401, 413, 415, 422, 503, 504),
    openapi_extra=RAW_AUDIO_OPENAPI,
    summary="Reports closest to a recording, or to a free-text query when the bundle has a text encoder",
)
async def similar_reports(
    request: Request,
    runtime: RuntimeDep,
    file: Annotated[UploadFile | None, File(description="The recording to search with.")] = None,
    query: Annotated[str | None, Form(max_length=2000, description="Free text (needs a text side).")] = None,
    k: Annotated[int, Query(ge=1, description="How many reports.")] = 5,
) -> SimilarReportsResponse:
    pipeline = runtime.pipeline
    if pipeline.index is None:
        raise NoReportIndex("this bundle has no report index")
    if k > runtime.settings.max_top_k:
        raise ApiError("invalid_request", f"k is at most {runtime.settings.max_top_k}")
    raw_body = is_raw_audio(request.headers.get("content-type", ""))  # the recording as the body itself
    if (file is not None and query is not None) or (file is None and query is None and not raw_body):
        raise ApiError("invalid_request", "send exactly one of 'file' (a recording) or 'query' (text)")
    kind: Literal["audio", "text"]
    if query is not None:
        hits, timings = await runtime.search_text(query, k)
        kind = "text"
    else:
        if file is None:
            data = await request.body()
        else:
            try:
                data = await file.read()
            finally:
                await file.close()
        prediction = await runtime.run(data, None, top_k=k)
        request.state.audio_seconds = round(prediction.audio.duration_s, 3)
        request.state.windows = prediction.window_count
        hits, timings, kind = prediction.reports or [], prediction.timings_ms, "audio"
    return similar_reports_response(pipeline.manifest, kind, hits, timings)
