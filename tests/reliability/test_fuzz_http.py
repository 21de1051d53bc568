"""Mutated real recordings through a live ``acula serve`` (real uvicorn, real sockets): only 200 or 4xx.

The decoder fuzzers (``test_fuzz_decode.py``) give volume; these few hundred inputs prove the same inputs
cannot reach a 500 through the HTTP layer (multipart parsing, error mapping, the batcher, the probes), that
each refusal is problem+json with a documented code, and that the server is alive and serving afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acula.service.api.errors import ERROR_MAP
from tests.reliability.mutations import GENERATED, WAV_FIELDS, flac_streaminfo, flip_bits, nan_wav, wav_field
from tests.support.server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MUTATIONS = ["bits", "cut", "wav_field", "flac_info", "nan", "none"]


@pytest.fixture(scope="module")
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30.0) as session:
        yield session


def mutate(data: st.DataObject, seeds: dict[str, bytes]) -> bytes:
    seed = seeds[data.draw(st.sampled_from(sorted(seeds)), label="seed")]
    kind = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    if kind == "bits":
        positions = data.draw(st.lists(st.floats(0, 0.2), min_size=1, max_size=8))
        return flip_bits(seed, positions, data.draw(st.lists(st.integers(0, 7), min_size=1)))
    if kind == "cut":
        return seed[: data.draw(st.integers(1, len(seed)))]
    if kind == "wav_field" and seed[:4] == b"RIFF":
        return wav_field(seed, data.draw(st.sampled_from(WAV_FIELDS)), data.draw(st.integers(0, 2**32 - 1)))
    if kind == "flac_info" and seed[:4] == b"fLaC":
        return flac_streaminfo(
            seed,
            rate=data.draw(st.integers(0, 2**20 - 1)),
            channels=data.draw(st.integers(1, 8)),
            total=data.draw(st.integers(0, 2**36 - 1)),
        )
    if kind == "nan":
        return nan_wav(share=data.draw(st.floats(0.001, 1.0)))
    return seed


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_uploads_get_200_or_a_documented_4xx(
    client: httpx.Client, seeds: dict[str, bytes], data: st.DataObject
) -> None:
    body = mutate(data, seeds)
    GENERATED["http"] += 1
    mime = data.draw(st.sampled_from(["audio/wav", "audio/flac", "application/octet-stream", "audio/mpeg"]))
    response = client.post("/predict", files={"file": ("x", body, mime)})
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] in ERROR_MAP and ERROR_MAP[problem["code"]][0] == response.status_code
    else:
        assert response.json()["windows"]["count"] >= 1


def test_the_server_still_serves_after_the_fuzzing(client: httpx.Client, seeds: dict[str, bytes]) -> None:
    """Runs after the fuzzer in this module (pytest keeps file order): healthy, ready, and answering."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.post("/predict", files={"file": ("x", seeds["flac-8000"], "audio/flac")}).status_code == 200
