"""In-process checks of states a live server rarely shows: not ready, inference timeout, encoder failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np

from acula.service.app import create_app
from acula.service.settings import Settings
from tests.support.bundles import TinyBundleOptions, build_tiny_bundle, wav_bytes

Check = Callable[[httpx.AsyncClient], Awaitable[None]]


def _run(settings: Settings, check: Check, start: bool = True) -> None:
    app = create_app(settings)

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://acula") as client:
            if not start:
                await check(client)
                return
            async with app.router.lifespan_context(app):
                await check(client)

    asyncio.run(main())


def _upload() -> dict[str, tuple[str, bytes]]:
    return {"file": ("a.wav", wav_bytes(2.0))}


def test_not_ready_until_the_bundle_is_loaded(tiny_bundle: Path) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        predict = await client.post("/predict", files=_upload())
        assert predict.status_code == 503 and predict.json()["code"] == "not_ready"

    _run(Settings(bundle=tiny_bundle), check, start=False)


def test_inference_timeout_is_504(tiny_bundle: Path) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        response = await client.post("/predict", files=_upload())
        assert response.status_code == 504 and response.json()["code"] == "timeout"

    _run(Settings(bundle=tiny_bundle, request_timeout_s=0.3, body_timeout_s=0.2, max_wait_ms=2000), check)


def test_encoder_failure_is_a_500_problem_without_internals(tiny_bundle: Path) -> None:
    app_settings = Settings(bundle=tiny_bundle)

    class BrokenEncoder:
        providers = ["CPUExecutionProvider"]

        def run(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            raise RuntimeError("secret internal detail")

        def warm_up(self, window_samples: int, max_batch_size: int) -> None:
            return None

    app = create_app(app_settings)

    async def main() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://acula")
        async with client, app.router.lifespan_context(app):
            app.state.runtime.pipeline.backend = BrokenEncoder()
            response = await client.post("/predict", files=_upload(), headers={"X-Request-ID": "r-500"})
            assert response.status_code == 500
            body = response.json()
            assert body["code"] == "internal" and body["instance"] == "r-500"
            assert "secret" not in response.text
            assert response.headers["x-request-id"] == "r-500"
            assert (await client.get("/healthz")).status_code == 200  # still serving

    asyncio.run(main())


def test_similar_reports_by_free_text(tmp_path: Path) -> None:
    build_tiny_bundle(tmp_path / "text", TinyBundleOptions(text_side=True))

    async def check(client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/similar-reports", params={"k": 3}, data={"query": "wheeze at the left lobe"}
        )
        body = response.json()
        assert response.status_code == 200 and body["query"] == "text" and len(body["reports"]) == 3
        assert (await client.get("/v1/model")).json()["text_side"] is True
        blank = await client.post("/similar-reports", data={"query": "   "})
        assert blank.status_code == 422 and blank.json()["code"] == "invalid_query"

    _run(Settings(bundle=tmp_path / "text"), check)
