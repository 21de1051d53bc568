"""Reports from any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, Ollama, hosted APIs).

Configured from the environment (``ACULA_LLM_BASE_URL``, e.g. ``http://127.0.0.1:8000/v1``;
``ACULA_LLM_MODEL``; ``ACULA_LLM_API_KEY``, optional). Requests run with bounded concurrency and are retried
by tenacity with jittered exponential backoff (or the server's Retry-After, if longer) on 429, 5xx, timeouts,
connection errors and malformed responses. Each response is cached on disk under the hash of (model, prompt),
so a rerun sends nothing, and records with the same prompt share one request. The prompt gives the model only
the normalised facts the template writer would state (never ids, names or dates); every answer is checked by
the validator, and a rejected or failed answer is replaced by the template report, with the reasons kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from acula.training.data.records import Recording
from acula.training.reports.facts import fact_sheet
from acula.training.reports.schema import Report
from acula.training.reports.template import TemplateWriter
from acula.training.reports.validator import validate_text
from acula.training.reports.vocabulary import mentions

log = logging.getLogger("acula.reports")

SYSTEM_PROMPT = (
    "You write short auscultation reports (2 to 5 sentences) as a clinician would: recording site, patient, "
    "findings, impression. State ONLY the facts listed; never add a finding, diagnosis, severity, side, "
    "site, age or sex that is not listed. Do not recommend tests, referral or treatment. "
    "Never write names, dates or identifiers. Reply with the report text only."
)
FAMILIES = {
    "sprsound": "paediatric lung sound recording",
    "physionet2016": "heart sound recording (phonocardiogram); only normal/abnormal is known",
    "bmd_hs": "adult heart sound recording, valvular disease clinic",
    "coswara": "cough or breathing sound recorded at the mouth, with self-reported health",
    "hls_cmds": "heart and/or lung sound played by a clinical manikin (simulation, not a patient)",
    "icbhi2017": "lung sound recording, respiratory clinic",
    "circor2022": "paediatric cardiac screening (murmur assessment)",
}
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


MAX_RETRY_AFTER_S = 60.0


def retry_after(response: httpx.Response) -> float:
    """Seconds the server asked us to wait (``Retry-After: <seconds>``, capped at a minute); 0 if none."""
    try:
        return min(max(float(response.headers.get("retry-after", "")), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0  # absent, or an HTTP date: the exponential backoff applies


class LLMError(Exception):
    """A failed request; ``reason`` is the stable code kept with the fallback report. ``retryable`` ones are
    tried again, no sooner than ``retry_after`` seconds (the server's Retry-After) after the failure."""

    def __init__(self, reason: str, detail: str, retryable: bool = False, retry_after: float = 0.0) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, LLMError) and error.retryable


class OpenAIWriter:
    """``write(record)`` / ``write_many(records)`` -> validated LLM reports, template fallback."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        fallback: TemplateWriter | None = None,
        cache_dir: Path | None = None,
        concurrency: int = 4,
        max_retries: int = 4,
        timeout_s: float = 60.0,
        backoff_s: float = 1.0,
        temperature: float = 0.7,
    ) -> None:
        if not base_url or not model:
            raise ValueError("an OpenAI-compatible writer needs a base URL and a model name")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.fallback = fallback or TemplateWriter()
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.temperature = temperature

    @classmethod
    def from_env(cls, **kwargs: Any) -> OpenAIWriter:
        base_url = os.environ.get("ACULA_LLM_BASE_URL", "")
        model = os.environ.get("ACULA_LLM_MODEL", "")
        if not base_url or not model:
            raise ValueError(
                "--backend openai needs ACULA_LLM_BASE_URL (e.g. http://127.0.0.1:8000/v1), ACULA_LLM_MODEL"
            )
        return cls(base_url, model, os.environ.get("ACULA_LLM_API_KEY") or None, **kwargs)

    # --- prompt and cache ---------------------------------------------------------------------------
    def prompt(self, record: Recording) -> str:
        """The user message: the recording type and the facts the template writer would state."""
        facts = self.fallback.write(record).facts
        lines = [f"Recording type: {FAMILIES.get(record.dataset, record.dataset)}.", "Facts:"]
        lines += [f"- {fact}" for fact in facts] or ["- (no further facts)"]
        lines.append("Write the report.")
        return "\n".join(lines)

    def prompt_hash(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.model}\n{SYSTEM_PROMPT}\n{prompt}".encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    def _cached(self, key: str) -> str | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        return str(json.loads(path.read_text())["text"])

    def _store(self, key: str, text: str) -> None:
        path = self._cache_path(key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"model": self.model, "prompt_hash": key, "text": text}))
            tmp.replace(path)  # atomic: an interrupted run never leaves half a cache entry

    # --- HTTP ---------------------------------------------------------------------------------------
    async def _request(self, client: httpx.AsyncClient, prompt: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": 300,
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        backoff = wait_exponential(multiplier=self.backoff_s) + wait_random(0, self.backoff_s / 4)

        def wait(state: RetryCallState) -> float:  # the backoff, or longer when the server asked for it
            error = state.outcome.exception() if state.outcome else None
            return max(backoff(state), error.retry_after if isinstance(error, LLMError) else 0.0)

        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_retryable),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait,
            reraise=True,
        )
        return await retrying(self._attempt, client, body, headers)

    async def _attempt(self, client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]) -> str:
        """One request; every failure becomes an :class:`LLMError` saying whether to try again."""
        try:
            response = await client.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
        except httpx.TimeoutException as error:
            raise LLMError("llm_timeout", str(error) or "request timed out", retryable=True) from error
        except httpx.TransportError as error:
            raise LLMError("llm_connection_error", str(error), retryable=True) from error
        if response.status_code >= 400:
            retryable = response.status_code in RETRYABLE_STATUS
            raise LLMError(
                f"llm_http_{response.status_code}",
                response.text[:200],
                retryable=retryable,
                retry_after=retry_after(response) if retryable else 0.0,
            )
        try:
            text = response.json()["choices"][0]["message"]["content"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError("empty content")
            return text.strip()
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise LLMError(
                "llm_malformed_response", f"{type(error).__name__}: {error}", retryable=True
            ) from error

    async def _fetch(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, prompt: str, key: str) -> str:
        text = self._cached(key)
        if text is None:
            async with gate:
                text = await self._request(client, prompt)
            self._store(key, text)
        return text

    async def _write_one(
        self,
        client: httpx.AsyncClient,
        gate: asyncio.Semaphore,
        pending: dict[str, asyncio.Future[str]],
        record: Recording,
    ) -> Report:
        prompt = self.prompt(record)
        key = self.prompt_hash(prompt)
        # Records with the same facts have the same prompt: one request serves them all (the cache alone
        # would not, as they are in flight at the same time).
        if key not in pending:
            pending[key] = asyncio.ensure_future(self._fetch(client, gate, prompt, key))
        try:
            text = await pending[key]
        except LLMError as error:
            log.warning("%s:%s: LLM failed (%s); template used", record.dataset, record.recording_id, error)
            return self._fallback(record, prompt, key, [error.reason])
        sheet = fact_sheet(record)
        reasons = validate_text(text, sheet)
        if reasons:
            return self._fallback(record, prompt, key, reasons)
        stated = sorted({m.fact for m in mentions(text) if not m.negated})
        return Report(
            text=text, facts=stated, writer=self.name, model=self.model, prompt=prompt, prompt_hash=key
        )

    def _fallback(self, record: Recording, prompt: str, key: str, reasons: list[str]) -> Report:
        report = self.fallback.write(record)
        return report.model_copy(update={"prompt": prompt, "prompt_hash": key, "fallback_reasons": reasons})

    async def _write_all(self, records: list[Recording]) -> list[Report]:
        gate = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(limits=limits) as client:
            pending: dict[str, asyncio.Future[str]] = {}
            return list(await asyncio.gather(*(self._write_one(client, gate, pending, r) for r in records)))

    def write_many(self, records: list[Recording]) -> list[Report]:
        return asyncio.run(self._write_all(list(records)))

    def write(self, record: Recording) -> Report:
        return self.write_many([record])[0]
