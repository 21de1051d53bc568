"""``POST /similar-reports``: the training-side reports closest to a recording (or to a text query).

Texts are returned only when the manifest marks the corpus de-identified; otherwise ids, scores, datasets and
labels only. The bundle, not the request, decides. The body goes through the one upload path
(:mod:`acula.service.api.upload`), which also reads the ``query`` field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from acula.service.api.deps import RuntimeDep
from acula.service.api.errors import ApiError
from acula.service.api.schemas import SimilarReportsResponse, problem_responses, similar_reports_response
from acula.service.api.upload import read_upload, upload_openapi
from acula.service.core.errors import NoReportIndex

router = APIRouter(tags=["reports"])
QUERY_FIELD = "query"
MAX_QUERY_CHARS = 2000
OPENAPI = upload_openapi(
    {
        QUERY_FIELD: {
            "type": "string",
            "maxLength": MAX_QUERY_CHARS,
            "description": "Free text to search with instead of a recording (needs a text side).",
        }
    }
)


@router.post(
    "/similar-reports",
    response_model=SimilarReportsResponse,
    responses=problem_responses(401, 413, 415, 422, 503, 504),
    openapi_extra=OPENAPI,
    summary="Reports closest to a recording, or to a free-text query when the bundle has a text encoder",
)
async def similar_reports(
    request: Request,
    runtime: RuntimeDep,
    k: Annotated[int, Query(ge=1, description="How many reports.")] = 5,
) -> SimilarReportsResponse:
    pipeline = runtime.pipeline
    if pipeline.index is None:
        raise NoReportIndex("this bundle has no report index")
    if k > runtime.settings.max_top_k:
        raise ApiError("invalid_request", f"k is at most {runtime.settings.max_top_k}")
    upload = await read_upload(request, frozenset({QUERY_FIELD}))
    query = upload.fields.get(QUERY_FIELD)
    if (upload.recording is None) == (query is None):
        raise ApiError("invalid_request", "send exactly one of 'file' (a recording) or 'query' (text)")
    kind: Literal["audio", "text"]
    if query is not None:
        if len(query) > MAX_QUERY_CHARS:
            raise ApiError(
                "invalid_request", f"the query is {len(query)} characters; at most {MAX_QUERY_CHARS}"
            )
        hits, timings = await runtime.search_text(query, k)
        kind = "text"
    else:
        assert upload.recording is not None
        prediction = await runtime.run(upload.recording, None, top_k=k)
        request.state.audio_seconds = round(prediction.audio.duration_s, 3)
        request.state.windows = prediction.window_count
        hits, timings, kind = prediction.reports or [], prediction.timings_ms, "audio"
    return similar_reports_response(pipeline.manifest, kind, hits, timings)
