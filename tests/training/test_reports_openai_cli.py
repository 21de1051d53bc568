"""``acula reports build --backend openai`` end to end: configured from ACULA_LLM_* only, against the real
chat-completions server of ``test_reports_openai`` on 127.0.0.1, with the rejection counts printed and a
second build from the same cache sending no request; and a server's Retry-After honoured over the backoff."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from acula.service.cli import full_app
from acula.training.data import load_records
from acula.training.reports.openai_writer import OpenAIWriter
from acula.training.reports.schema import load_reports
from acula.training.reports.template import TemplateWriter
from acula.training.reports.validator import validate
from tests.training.test_reports_openai import ChatServer, server  # noqa: F401  (the server fixture)

app = full_app()


@pytest.fixture
def llm_env(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # noqa: F811
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    monkeypatch.setenv("ACULA_LLM_BASE_URL", base)
    monkeypatch.setenv("ACULA_LLM_MODEL", "cli-model")
    monkeypatch.setenv("ACULA_LLM_API_KEY", "cli-key")
    yield base


def test_build_with_openai_backend(
    server: ChatServer,  # noqa: F811
    llm_env: str,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    records = load_records(shared_data, ["icbhi2017"])
    planner = OpenAIWriter(llm_env, "cli-model")  # same prompts as the CLI's writer (default seed 0)
    prompts = {planner.prompt(r): r for r in records}
    bad = next(iter(prompts))
    for prompt, record in prompts.items():
        good = TemplateWriter(seed=5).write(record).text + " Reviewed by the auscultation service."
        server.plans[prompt] = [f"ok:{good}"]
    server.plans[bad] = [f"ok:{TemplateWriter().write(prompts[bad]).text} Coarse crackles are heard."]
    if "finding:coarse crackle" in str(prompts[bad].labels):  # pragma: no cover - guard for the plant
        pytest.skip("the planted finding is supported by this record")

    out = tmp_path / "reports.jsonl"
    args = ["reports", "build", "--root", str(shared_data), "--out", str(out), "-d", "icbhi2017"]
    args += ["--backend", "openai", "--cache", str(tmp_path / "cache"), "--concurrency", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "31 written" in result.output and "unsupported_finding" in result.output
    # One request per distinct prompt (two ICBHI recordings share their facts, so 31 records, 30 prompts).
    assert len(prompts) < len(records) and max(server.requests.values()) == 1
    assert sum(server.requests.values()) == len(prompts) and server.auth == {"Bearer cli-key"}
    assert server.max_in_flight <= 3

    rows = load_reports(out)
    by_id = {row.recording_id: row for row in rows}
    assert len(rows) == 31
    bad_ids = [r.recording_id for r in records if planner.prompt(r) == bad]
    for row in rows:
        record = next(r for r in records if r.recording_id == row.recording_id)
        assert validate(row.text, record) == [] and row.prompt and row.prompt_hash
        if row.recording_id in bad_ids:
            assert row.writer == "template" and row.fallback_reasons == ["unsupported_finding"]
        else:
            assert row.writer == "openai" and row.model == "cli-model" and "Reviewed by" in row.text
    assert by_id[bad_ids[0]].prompt == bad

    # A fresh output from the same cache: every answer is on disk, so no request is sent.
    sent = sum(server.requests.values())
    again = CliRunner().invoke(app, [*args[:5], str(tmp_path / "again.jsonl"), *args[6:]])
    assert again.exit_code == 0, again.output
    assert sum(server.requests.values()) == sent
    assert [r.text for r in load_reports(tmp_path / "again.jsonl")] == [r.text for r in rows]


def test_openai_backend_without_configuration_says_what_is_missing(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACULA_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("ACULA_LLM_MODEL", raising=False)
    args = ["reports", "build", "--root", str(shared_data), "--out", str(tmp_path / "r.jsonl")]
    result = CliRunner().invoke(app, [*args, "-d", "icbhi2017", "--backend", "openai"])
    assert result.exit_code != 0
    assert "ACULA_LLM_BASE_URL" in str(result.exception) + result.output


class _RetryAfterHandler(BaseHTTPRequestHandler):
    """First request: 429 with ``Retry-After: 1``; then a valid report. Records when each request came."""

    arrivals: list[float] = []
    answer = ""

    def log_message(self, *args: object) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).arrivals.append(time.monotonic())
        if len(self.arrivals) == 1:
            body, status, extra = b'{"error": {"message": "slow down"}}', 429, {"Retry-After": "1"}
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": self.answer}}
            body, status, extra = json.dumps({"choices": [choice]}).encode(), 200, {}
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **extra}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_retry_after_is_honoured(shared_data: Path, tmp_path: Path) -> None:
    record = load_records(shared_data, ["icbhi2017"])[0]
    _RetryAfterHandler.arrivals = []
    _RetryAfterHandler.answer = TemplateWriter(seed=9).write(record).text
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RetryAfterHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        writer = OpenAIWriter(base, "m", cache_dir=tmp_path, backoff_s=0.01, max_retries=2)
        report = writer.write(record)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert report.writer == "openai" and len(_RetryAfterHandler.arrivals) == 2
    waited = _RetryAfterHandler.arrivals[1] - _RetryAfterHandler.arrivals[0]
    assert waited >= 0.95  # the server's 1 s, not the 0.01 s backoff
