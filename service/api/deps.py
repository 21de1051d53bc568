"""Route dependencies as ``Annotated`` aliases: the runtime and the uploaded recording.

Authentication is not a dependency: FastAPI reads a form body before it runs a route's dependencies, so a
dependency cannot refuse before the body is read. ``AuthMiddleware`` does it for every route.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from acula.service.api.upload import read_recording
from acula.service.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async, like every dependency here: FastAPI runs a sync dependency in a worker thread, a round trip that
    # cost more event-loop time per request than decoding the upload (docs/PERFORMANCE.md).
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
UploadBytes = Annotated[bytes, Depends(read_recording)]
