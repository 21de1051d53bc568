"""Route dependencies as ``Annotated`` aliases: the runtime, the API-key check and the uploaded bytes.

The API key is optional (authentication normally ends at the hospital gateway). When keys are configured,
a request must carry one in ``X-API-Key`` or ``Authorization: Bearer``; keys are compared with
``hmac.compare_digest`` against every configured key, so timing reveals neither which key nor how much of it
matched. Health, readiness and metrics do not depend on it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from acula.service.api.errors import ApiError
from acula.service.api.upload import read_recording
from acula.service.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async, like every dependency here: FastAPI runs a sync dependency in a worker thread, a round trip that
    # cost more event-loop time per request than decoding the upload (docs/PERFORMANCE.md).
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def require_api_key(request: Request, runtime: RuntimeDep) -> None:
    """Refuse with 401 when keys are configured and none of them matches."""
    if not runtime.api_keys:
        return
    presented = _presented_key(request)
    if presented is None:
        raise ApiError("unauthorized", "send an API key in X-API-Key or Authorization: Bearer")
    # Compare digests: equal lengths always, so timing reveals nothing about key lengths either.
    candidate = hashlib.sha256(presented.encode()).digest()
    matched = False
    for key in runtime.api_keys:
        matched |= hmac.compare_digest(candidate, hashlib.sha256(key).digest())
    if not matched:
        raise ApiError("unauthorized", "the API key is not valid")


Authorised = Depends(require_api_key)


UploadBytes = Annotated[bytes, Depends(read_recording)]
