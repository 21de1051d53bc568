"""``POST /predict``: the probes that apply to a recording, optionally similar reports and per-window scores.

The client may state what the recording is (``sound_type``, ``age_group``, ``site``); otherwise the bundle's
sound-type classifier decides, and only the probes trained on that sound type answer (the rules live in
:mod:`acula.service.core.applicability`). ``Accept: application/fhir+json`` returns the same answer as a FHIR
R4B Bundle (:mod:`acula.service.fhir`); every response varies on ``Accept``, so caches keep the two apart.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from acula.service.api.deps import RuntimeDep, UploadBytes
from acula.service.api.errors import PROBLEM_JSON, ApiError
from acula.service.api.schemas import (
    LUNG_EXAMPLE,
    NOT_AUSCULTATION_EXAMPLE,
    PREDICT_EXAMPLES,
    PredictResponse,
    predict_response,
    problem_responses,
)
from acula.service.api.upload import UPLOAD_OPENAPI
from acula.service.bundle import SOUND_TYPES
from acula.service.core.applicability import AGE_GROUPS, MAX_SITE_CHARS, ClientContext
from acula.service.fhir import FHIR_JSON, fhir_bundle, wants_fhir

router = APIRouter(tags=["inference"])


def split_tasks(values: list[str] | None) -> list[str]:
    """``?tasks=a,b`` and ``?tasks=a&tasks=b`` both mean tasks a and b; none means every applicable one."""
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


async def client_context(
    sound_type: Annotated[
        str | None,
        Query(
            description="What the recording is, if you know: it decides which probes answer, and wins over "
            "the model's own sound type (which is still reported).",
            json_schema_extra={"enum": list(SOUND_TYPES)},
        ),
    ] = None,
    age_group: Annotated[
        str | None,
        Query(
            description="Whose recording: probes trained only on the other group are skipped.",
            json_schema_extra={"enum": list(AGE_GROUPS)},
        ),
    ] = None,
    site: Annotated[
        str | None,
        Query(
            description="Auscultation site; a warning when a probe never saw it.",
            json_schema_extra={"maxLength": MAX_SITE_CHARS},
        ),
    ] = None,
) -> ClientContext:
    # Plain strings checked by ClientContext.parse, as the CLI and the Python API check them: an invalid value
    # is the same invalid_query problem whichever way the recording was sent (multipart or raw body).
    return ClientContext.parse(sound_type, age_group, site)


ContextDep = Annotated[ClientContext, Depends(client_context)]


def _fhir_example() -> dict[str, Any]:
    import json
    from datetime import UTC, datetime

    response = PredictResponse.model_validate(LUNG_EXAMPLE)
    ids = iter(f"00000000-0000-4000-8000-{i:012d}" for i in range(1, 100))
    return json.loads(fhir_bundle(response, datetime(2026, 1, 1, tzinfo=UTC), lambda: next(ids)))


RESPONSES: dict[int | str, dict[str, Any]] = {
    **problem_responses(401, 413, 415, 503, 504),
    200: {
        "description": "The applicable probes' answers: plain JSON, or a FHIR R4B Bundle when the Accept "
        f"header prefers {FHIR_JSON}.",
        "content": {
            "application/json": {
                "examples": {
                    name: {"summary": f"{name} upload", "value": v} for name, v in PREDICT_EXAMPLES.items()
                }
            },
            FHIR_JSON: {
                "schema": {"type": "object", "description": "FHIR R4B Bundle (type collection)."},
                "example": _fhir_example(),
            },
        },
    },
    422: {
        "model": problem_responses(422)[422]["model"],
        "description": "Problem details: an invalid request or recording, or (code not_auscultation) an "
        "upload the model is confident is no heart, lung, cough or breathing sound: speech, music, noise.",
        "content": {PROBLEM_JSON: {"example": NOT_AUSCULTATION_EXAMPLE}},
    },
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=RESPONSES,
    openapi_extra=UPLOAD_OPENAPI,
    summary="The probes that apply to a recording (JSON, or FHIR with Accept: application/fhir+json)",
)
async def predict(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    data: UploadBytes,
    context: ContextDep,
    tasks: Annotated[
        list[str] | None,
        Query(
            description="Task names (repeat or comma-separate). Absent: every probe that applies to the "
            "recording's sound type, demographic ones excepted. Named: exactly those, each with a warning "
            "if it does not apply."
        ),
    ] = None,
    top_k: Annotated[int, Query(ge=0, description="Also return the k most similar reports.")] = 0,
    per_window: Annotated[bool, Query(description="Also return the task outputs of every window.")] = False,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> PredictResponse | Response:
    if top_k > runtime.settings.max_top_k:
        raise ApiError("invalid_request", f"top_k is at most {runtime.settings.max_top_k}")
    prediction = await runtime.run(
        data, split_tasks(tasks), top_k=top_k, per_window=per_window, context=context
    )
    request.state.audio_seconds = round(prediction.audio.duration_s, 3)
    request.state.windows = prediction.window_count
    answer = predict_response(runtime.pipeline.manifest, prediction)
    if wants_fhir(accept):
        return Response(fhir_bundle(answer), media_type=FHIR_JSON, headers={"Vary": "Accept"})
    response.headers["Vary"] = "Accept"
    return answer
