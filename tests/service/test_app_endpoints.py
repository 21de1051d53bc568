"""Every endpoint and every error case, through a real ``acula serve`` process on 127.0.0.1."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.support.bundles import CLASS_LABELS, wav_bytes
from tests.support.server import LiveServer, serve


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"ACULA_MAX_AUDIO_SECONDS": "30", "ACULA_MAX_UPLOAD_BYTES": "2000000"}
    with serve(tiny_bundle, tmp_path_factory.mktemp("endpoints"), env) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


def _upload(data: bytes, name: str = "recording.wav") -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, data, "application/octet-stream")}


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"urn:acula:problem:{code}" and body["title"] and body["detail"]
    assert body["instance"] == response.headers["x-request-id"]
    return body


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}


def test_predict_returns_every_task_and_metadata(client: httpx.Client) -> None:
    response = client.post("/predict", files=_upload(wav_bytes(10.0, rate=4000)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"]["name"], body["model"]["version"]) == ("acula-tiny", "0.0.1-test")
    assert body["model"]["digest"].startswith("sha256:") and len(body["model"]["digest"]) == 7 + 64
    assert body["input"]["native_rate"] == 4000 and body["input"]["sample_rate"] == 8000
    assert body["input"]["duration_s"] == pytest.approx(10.0)
    assert body["windows"]["count"] == 9
    assert set(body["tasks"]) == {"sound", "disease", "age"}
    assert body["tasks"]["sound"]["label"] in CLASS_LABELS
    assert sum(body["tasks"]["sound"]["probabilities"].values()) == pytest.approx(1.0)
    assert body["tasks"]["age"]["unit"] == "years"
    assert "reports" not in body and "window_scores" not in body
    assert {"decode", "queue", "inference", "probes", "total"} <= set(body["timings_ms"])


def test_predict_task_selection_reports_and_windows(client: httpx.Client) -> None:
    response = client.post(
        "/predict",
        params={"tasks": "sound,age", "top_k": 4, "per_window": "true"},
        files=_upload(wav_bytes(4.0)),
    )
    body = response.json()
    assert set(body["tasks"]) == {"sound", "age"}
    assert len(body["reports"]) == 4 and all(hit["text"] for hit in body["reports"])
    assert [w["start_s"] for w in body["window_scores"]] == [0.0, 1.0, 2.0]
    assert set(body["window_scores"][0]["tasks"]) == {"sound", "age"}
    assert "search" in body["timings_ms"]


def test_similar_reports_by_audio(client: httpx.Client) -> None:
    response = client.post("/similar-reports", params={"k": 5}, files=_upload(wav_bytes(3.0)))
    body = response.json()
    assert response.status_code == 200 and body["query"] == "audio" and body["deidentified"] is True
    assert len(body["reports"]) == 5
    scores = [hit["score"] for hit in body["reports"]]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0 + 1e-5
    assert body["reports"][0]["dataset"] == "synthetic" and "sound" in body["reports"][0]["labels"]


def test_similar_reports_text_query_needs_a_text_side(client: httpx.Client) -> None:
    _problem(client.post("/similar-reports", data={"query": "wheeze"}), 422, "no_text_side")
    _problem(
        client.post("/similar-reports", data={"k": "3"}), 422, "invalid_request"
    )  # neither file nor query
    both = client.post("/similar-reports", data={"query": "x"}, files=_upload(wav_bytes(1.0)))
    _problem(both, 422, "invalid_request")


def test_embed(client: httpx.Client) -> None:
    body = client.post("/embed", files=_upload(wav_bytes(5.0))).json()
    assert len(body["embedding"]) == 16 and len(body["joint"]) == 8
    assert np.linalg.norm(body["joint"]) == pytest.approx(1.0, abs=1e-5)
    assert body["windows"]["count"] == 4


def test_model_info(client: httpx.Client) -> None:
    body = client.get("/v1/model").json()
    assert body["execution_providers"][0] == "CPUExecutionProvider"
    assert body["limits"]["max_audio_seconds"] == 30 and body["limits"]["max_upload_bytes"] == 2000000
    assert [p["task"] for p in body["probes"]] == ["sound", "disease", "age"]
    assert body["report_index"]["count"] == 40 and body["text_side"] is False
    # The batch size really in use: none configured, so the CPU default.
    assert body["limits"]["max_batch_size"] == 8 and body["threads"]["inference_workers"] >= 1


def test_metrics_exposition(client: httpx.Client) -> None:
    client.post("/predict", files=_upload(wav_bytes(3.0)))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        'acula_request_duration_seconds_count{method="POST",route="/predict",status="200"}',
        'acula_stage_duration_seconds_count{stage="decode"}',
        'acula_stage_duration_seconds_count{stage="queue"}',
        'acula_stage_duration_seconds_count{stage="inference"}',
        "acula_batch_size_count",
        "acula_queue_depth",
        "acula_windows_total",
        'acula_model_info{name="acula-tiny"',
    ):
        assert name in text, name
    assert client.get("/metrics/").status_code == 404  # exactly /metrics


def test_request_id_round_trip_and_traceparent(client: httpx.Client) -> None:
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = client.get("/healthz", headers={"X-Request-ID": "gateway-42", "traceparent": trace})
    assert response.headers["x-request-id"] == "gateway-42" and response.headers["traceparent"] == trace
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert unsafe != "bad id\twith spaces" and len(unsafe) == 32
    body = _problem(client.get("/nowhere", headers={"X-Request-ID": "rid-7"}), 404, "not_found")
    assert body["instance"] == "rid-7"


def test_openapi_documents_endpoints_with_examples(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/similar-reports", "/embed", "/healthz", "/readyz", "/metrics", "/v1/model"):
        assert path in spec["paths"], path
    assert "application/problem+json" in spec["paths"]["/predict"]["post"]["responses"]["415"]["content"]
    for path in ("/predict", "/embed"):  # the recording: a multipart field or the raw body
        body = spec["paths"][path]["post"]["requestBody"]["content"]
        assert body["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
        assert {"audio/*", "application/octet-stream"} <= set(body)
    assert "audio/*" in spec["paths"]["/similar-reports"]["post"]["requestBody"]["content"]
    assert spec["components"]["schemas"]["ClassificationResult"]["properties"]["label"]["examples"]


def _flac(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buffer, 0.2 * np.sin(2 * np.pi * 200 * t), rate, format="FLAC")
    return buffer.getvalue()


def test_flac_upload_is_accepted(client: httpx.Client) -> None:
    assert client.post("/predict", files=_upload(_flac(3.0), "x.flac")).status_code == 200


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 422, "empty_input"),
        (b"%PDF-1.4 definitely not audio" * 10, 415, "not_audio"),
        (wav_bytes(0.1), 422, "too_short"),
        (wav_bytes(40.0), 413, "too_long"),
    ],
    ids=["empty", "not-audio", "too-short", "too-long"],
)
def test_invalid_audio_gets_the_right_problem(
    client: httpx.Client, data: bytes, status: int, code: str
) -> None:
    for route in ("/predict", "/embed", "/similar-reports"):
        _problem(client.post(route, files=_upload(data)), status, code)


def test_truncated_or_corrupt_audio_is_a_client_error(client: httpx.Client) -> None:
    whole = wav_bytes(5.0)
    for data in (whole[:30], whole[:44] + b"\xff" * 7, b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 40):
        response = client.post("/predict", files=_upload(data))
        assert response.status_code in (415, 422), response.text
        assert response.headers["content-type"] == "application/problem+json"


def test_upload_over_the_byte_limit_is_413_by_content_length(client: httpx.Client) -> None:
    _problem(client.post("/predict", files=_upload(b"\x00" * 2_100_000)), 413, "too_large")


def test_upload_over_the_byte_limit_is_413_while_streaming(client: httpx.Client) -> None:
    boundary = "acula-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield head
        for _ in range(40):
            yield b"\x01" * 64_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    _problem(response, 413, "too_large")


def test_request_shape_errors(client: httpx.Client) -> None:
    _problem(client.post("/predict", json={"file": "x"}), 415, "unsupported_media_type")
    _problem(
        client.post("/predict", content=wav_bytes(1.0), headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    _problem(client.post("/predict", content=wav_bytes(1.0)), 415, "unsupported_media_type")  # no type
    _problem(client.post("/predict", files={"other": ("a.wav", wav_bytes(1.0))}), 422, "invalid_request")
    _problem(
        client.post("/predict", params={"tasks": "nope"}, files=_upload(wav_bytes(1.0))), 422, "unknown_task"
    )
    _problem(
        client.post("/predict", params={"top_k": 51}, files=_upload(wav_bytes(1.0))), 422, "invalid_request"
    )
    _problem(
        client.post("/predict", params={"top_k": "x"}, files=_upload(wav_bytes(1.0))), 422, "invalid_request"
    )
    _problem(
        client.post("/similar-reports", params={"k": 0}, files=_upload(wav_bytes(1.0))),
        422,
        "invalid_request",
    )
    _problem(client.get("/predict"), 405, "method_not_allowed")
    _problem(client.post("/similar-reports", data={"query": "x" * 2001}), 422, "invalid_request")
    _problem(
        client.post(
            "/predict", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"}
        ),
        422,
        "invalid_request",
    )


def _multipart(*parts: bytes, boundary: str = "b0und", close: bool = True) -> tuple[bytes, dict[str, str]]:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += (b"--" + boundary.encode() + b"--\r\n") if close else b""
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def _part(name: str | None, data: bytes) -> bytes:
    disposition = f'form-data; name="{name}"; filename="a.wav"' if name else "form-data"
    return f"Content-Disposition: {disposition}\r\nContent-Type: audio/wav\r\n\r\n".encode() + data


LONG_BOUNDARY = "b" * 300  # python-multipart's constructor raised on boundaries over 256 characters: a 500


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (_multipart(_part("file", wav_bytes(1.0)), close=False), "closing boundary"),
        (_multipart(_part(None, wav_bytes(1.0))), "no name"),
        (_multipart(*[_part(f"f{i}", b"x") for i in range(17)], _part("file", wav_bytes(1.0))), "parts"),
        ((wav_bytes(1.0), {"content-type": "multipart/form-data"}), "boundary"),
        (_multipart(_part("file", wav_bytes(1.0)), boundary=LONG_BOUNDARY), "boundary is 300 characters"),
        (_multipart(_part("file", wav_bytes(1.0)), boundary="x" * 71), "at most 70"),
        (_multipart(_part("file", wav_bytes(1.0)), _part("file", wav_bytes(2.0))), "more than one 'file'"),
    ],
    ids=[
        "unclosed",
        "part-without-name",
        "too-many-parts",
        "no-boundary",
        "300-char-boundary",
        "71-char-boundary",
        "duplicate-file",
    ],
)
@pytest.mark.parametrize("route", ["/predict", "/embed", "/similar-reports"])
def test_malformed_multipart_is_422_saying_what_is_wrong_on_every_upload_route(
    client: httpx.Client, server: LiveServer, body: tuple[bytes, dict[str, str]], detail: str, route: str
) -> None:
    """One upload path: every route that takes audio refuses the same bodies the same way (a duplicated
    'file' was taken first by /predict and last by /similar-reports)."""
    content, headers = body
    problem = _problem(client.post(route, content=content, headers=headers), 422, "invalid_request")
    assert detail in str(problem["detail"])
    assert "Traceback" not in server.logs()


def test_a_duplicated_query_field_is_refused(client: httpx.Client) -> None:
    _problem(client.post("/similar-reports", data={"query": ["a", "b"]}), 422, "invalid_request")
    content, headers = _multipart(
        b'Content-Disposition: form-data; name="query"\r\n\r\nwheeze',
        b'Content-Disposition: form-data; name="query"\r\n\r\ncrackle',
    )
    _problem(client.post("/similar-reports", content=content, headers=headers), 422, "invalid_request")


def test_unknown_task_names_are_not_echoed_back_in_bulk(client: httpx.Client) -> None:
    names = ",".join(f"t{i}" for i in range(3000))  # 17 KB: within the header limit
    problem = _problem(
        client.post("/predict", params={"tasks": names}, files=_upload(wav_bytes(1.0))), 422, "unknown_task"
    )
    assert "'t4'" in str(problem["detail"]) and "2995 more" in str(problem["detail"])
    assert "t2999" not in str(problem["detail"]) and len(str(problem["detail"])) < 1000


def test_recording_as_the_raw_body_equals_the_multipart_upload(client: httpx.Client) -> None:
    """``curl --data-binary`` with an audio type: same answer as the multipart field, on every upload route,
    and the file part is found among other fields in any order."""
    data = _flac(3.0)
    multipart = client.post("/predict", files=_upload(data, "x.flac")).json()
    for content_type in ("audio/flac", "application/octet-stream", "audio/x-anything; foo=bar"):
        raw = client.post("/predict", content=data, headers={"content-type": content_type})
        assert raw.status_code == 200, raw.text
        assert raw.json()["tasks"] == multipart["tasks"]
    content, headers = _multipart(_part("note", b"first"), _part("file", data))
    assert client.post("/predict", content=content, headers=headers).json()["tasks"] == multipart["tasks"]
    embedded = client.post("/embed", files=_upload(data)).json()
    raw_embed = client.post("/embed", content=data, headers={"content-type": "audio/flac"}).json()
    assert raw_embed["embedding"] == embedded["embedding"]
    similar = client.post("/similar-reports", files=_upload(data), params={"k": 3}).json()
    raw_similar = client.post(
        "/similar-reports", content=data, headers={"content-type": "audio/flac"}, params={"k": 3}
    )
    assert raw_similar.status_code == 200, raw_similar.text
    assert raw_similar.json()["reports"] == similar["reports"]


def test_no_request_above_produced_a_500(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    assert 'status="500"' not in text and 'code="internal"' not in text


def test_logs_are_json_with_request_ids_and_no_content(client: httpx.Client, server: LiveServer) -> None:
    secret_name = "patient-jane-doe-1970.wav"
    client.post(
        "/predict",
        params={"top_k": 5},
        files=_upload(wav_bytes(3.0), secret_name),
        headers={"X-Request-ID": "log-check-1", "X-Client-ID": "ward-7"},
    )
    client.post("/similar-reports", data={"query": "confidential free text"})
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    access = [
        line for line in lines if line.get("request_id") == "log-check-1" and line["message"] == "request"
    ]
    assert access and access[0]["route"] == "/predict" and access[0]["status"] == 200
    assert access[0]["client_id"] == "ward-7" and access[0]["audio_seconds"] == pytest.approx(3.0)
    text = server.logs()
    for leaked in (secret_name, "Synthetic test report", "confidential free text", "RIFF"):
        assert leaked not in text, leaked
