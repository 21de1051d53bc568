"""The OpenAI-compatible writer against a real chat-completions server on 127.0.0.1 started by the test.

The server answers each prompt by a plan the test sets (429, 500, a timeout, malformed JSON, a hallucinated
finding, or a good report) and counts requests, so retries, fallbacks and the cache are observed over HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from acula.training.data import load_records
from acula.training.data.records import Recording
from acula.training.reports.build import build_reports
from acula.training.reports.openai_writer import OpenAIWriter
from acula.training.reports.schema import load_reports
from acula.training.reports.template import TemplateWriter
from acula.training.reports.validator import validate


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.plans: dict[str, list[str]] = {}  # user prompt -> actions, consumed in order; last one repeats
        self.requests: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth: set[str] = set()
        self.lock = threading.Lock()


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._send(404, b'{"error": "not found"}')
            return
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = payload["messages"][-1]["content"]
        server = self.server
        with server.lock:
            server.requests[prompt] += 1
            server.auth.add(self.headers.get("Authorization", ""))
            plan = server.plans.get(prompt, ["ok:Unplanned prompt."])
            action = plan.pop(0) if len(plan) > 1 else plan[0]
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            if action.startswith("sleep:"):
                _, seconds, action = action.split(":", 2)
                time.sleep(float(seconds))
            if action == "429":
                self._send(429, b'{"error": {"message": "rate limited"}}')
            elif action == "500":
                self._send(500, b'{"error": {"message": "overloaded"}}')
            elif action == "malformed":
                self._send(200, b'{"choices": [{"message": ')
            else:
                text = action.removeprefix("ok:")
                body = {
                    "id": "x",
                    "object": "chat.completion",
                    "model": payload["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                }
                self._send(200, json.dumps(body).encode())
        finally:
            with server.lock:
                server.in_flight -= 1


@pytest.fixture
def server() -> Iterator[ChatServer]:
    chat = ChatServer()
    thread = threading.Thread(target=chat.serve_forever, daemon=True)
    thread.start()
    yield chat
    chat.shutdown()
    chat.server_close()


@pytest.fixture(scope="module")
def records(shared_data: Path) -> list[Recording]:
    """Real records with distinct prompts: ICBHI recordings and one BMD-HS patient's sites."""
    chosen = load_records(shared_data, ["icbhi2017", "bmd_hs"])
    writer = TemplateWriter()
    by_prompt: dict[tuple[str, ...], Recording] = {}
    for record in chosen:
        by_prompt.setdefault(tuple(writer.write(record).facts), record)
    distinct = list(by_prompt.values())
    return [r for r in distinct if r.dataset == "icbhi2017"][:6] + [
        r for r in distinct if r.dataset == "bmd_hs"
    ][:6]


def _writer(server: ChatServer, tmp_path: Path, **kwargs: object) -> OpenAIWriter:
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    options = {
        "cache_dir": tmp_path / "cache",
        "backoff_s": 0.01,
        "timeout_s": 2.0,
        "max_retries": 3,
    } | kwargs
    return OpenAIWriter(base, "test-model", api_key="secret", fallback=TemplateWriter(), **options)  # type: ignore[arg-type]


def _good_text(record: Recording) -> str:
    """A valid report that no template phrasing produces (proves the LLM text was kept)."""
    return TemplateWriter(seed=7).write(record).text + " Reviewed by the auscultation service."


def test_retries_429_and_5xx_then_keeps_the_valid_answer(
    server: ChatServer, tmp_path: Path, records: list[Recording]
) -> None:
    writer = _writer(server, tmp_path)
    record = records[0]
    prompt = writer.prompt(record)
    server.plans[prompt] = ["429", "500", f"ok:{_good_text(record)}"]
    report = writer.write(record)
    assert server.requests[prompt] == 3
    assert report.writer == "openai" and report.text == _good_text(record) and not report.fallback_reasons
    assert report.prompt == prompt and report.prompt_hash == writer.prompt_hash(prompt)
    assert validate(report.text, record) == []
    assert server.auth == {"Bearer secret"}


def test_timeout_is_retried(server: ChatServer, tmp_path: Path, records: list[Recording]) -> None:
    writer = _writer(server, tmp_path, timeout_s=0.3)
    record = records[1]
    prompt = writer.prompt(record)
    server.plans[prompt] = [f"sleep:1.0:ok:{_good_text(record)}", f"ok:{_good_text(record)}"]
    report = writer.write(record)
    assert server.requests[prompt] == 2 and report.writer == "openai"


def test_malformed_json_falls_back_to_the_template(
    server: ChatServer, tmp_path: Path, records: list[Recording]
) -> None:
    writer = _writer(server, tmp_path, max_retries=2)
    record = records[2]
    prompt = writer.prompt(record)
    server.plans[prompt] = ["malformed"]
    report = writer.write(record)
    assert server.requests[prompt] == 3  # first try and two retries
    assert report.writer == "template" and report.fallback_reasons == ["llm_malformed_response"]
    assert report.text == TemplateWriter().write(record).text and report.prompt == prompt


def test_hallucinated_finding_is_rejected_and_template_used(
    server: ChatServer, tmp_path: Path, records: list[Recording]
) -> None:
    writer = _writer(server, tmp_path)
    record = next(r for r in records if r.dataset == "bmd_hs")
    prompt = writer.prompt(record)
    server.plans[prompt] = [f"ok:{_good_text(record)} Expiratory wheezes are heard bilaterally."]
    report = writer.write(record)
    assert report.writer == "template"
    assert "unsupported_finding" in report.fallback_reasons
    assert "wheez" not in report.text.lower() and validate(report.text, record) == []


def test_cached_rerun_sends_no_request(server: ChatServer, tmp_path: Path, records: list[Recording]) -> None:
    first = _writer(server, tmp_path, concurrency=2)
    batch = records[3:9]
    for record in batch:
        server.plans[first.prompt(record)] = [f"sleep:0.1:ok:{_good_text(record)}"]
    reports = first.write_many(batch)
    sent = sum(server.requests.values())
    assert sent == len(batch) and 1 <= server.max_in_flight <= 2  # bounded concurrency
    again = _writer(server, tmp_path).write_many(batch)
    assert sum(server.requests.values()) == sent  # every answer came from the on-disk cache
    assert [r.text for r in again] == [r.text for r in reports]


def test_build_is_resumable_and_keeps_prompts(
    server: ChatServer, tmp_path: Path, records: list[Recording]
) -> None:
    writer = _writer(server, tmp_path)
    for record in records:
        server.plans[writer.prompt(record)] = [f"ok:{_good_text(record)}"]
    out = tmp_path / "reports.jsonl"
    half = records[: len(records) // 2]
    first = build_reports(half, writer, out)
    assert first.written == len(half) and first.fallbacks == 0
    second = build_reports(records, writer, out)
    assert second.already_present == len(half) and second.written == len(records) - len(half)
    rows = load_reports(out)
    assert len({row.report_id for row in rows}) == len(records)
    assert all(row.writer == "openai" and row.model == "test-model" and row.prompt for row in rows)


def test_unreachable_server_falls_back(tmp_path: Path, records: list[Recording]) -> None:
    writer = OpenAIWriter("http://127.0.0.1:9/v1", "m", cache_dir=tmp_path, backoff_s=0.01, max_retries=1)
    report = writer.write(records[0])
    assert report.writer == "template" and report.fallback_reasons == ["llm_connection_error"]


def test_from_env_requires_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACULA_LLM_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="ACULA_LLM_BASE_URL"):
        OpenAIWriter.from_env()
    monkeypatch.setenv("ACULA_LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("ACULA_LLM_MODEL", "m")
    assert OpenAIWriter.from_env().url == "http://127.0.0.1:1/v1/chat/completions"
