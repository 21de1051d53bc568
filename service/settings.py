"""Every knob of the service, in one pydantic-settings object (environment prefix ``ACULA_``).

Each field is also documented in ``docs/CONFIGURATION.md``; a test keeps the two in step. Thread counts are
explicit because onnxruntime and FAISS size their pools from the host's cores, not the container's CPU limit:
the defaults read the cgroup limit instead.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, FilePath, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from acula.service.audio.schema import DEFAULT_MAX_SAMPLES, AudioLimits
from acula.service.bundle import DEFAULT_BUNDLE

# Settings that were renamed: set under the old name they would be ignored silently, so start is refused.
RENAMED = {
    "ACULA_MAX_QUEUE": "ACULA_MAX_INFERENCE_REQUESTS",
    "ACULA_MAX_CONCURRENCY": "ACULA_MAX_INFERENCE_REQUESTS",
}
_KEY = re.compile(r"[\x21-\x7e]+")  # one token of visible ASCII: what X-API-Key / Bearer carry unchanged


def available_cpus() -> int:
    """CPUs this process may really use: the affinity mask, capped by a cgroup v2 ``cpu.max`` quota."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


class Settings(BaseSettings):
    """Service configuration; every field can be set as ``ACULA_<FIELD>`` in the environment."""

    # hide_input_in_errors: a validation error must not print the API keys it was given.
    model_config = SettingsConfigDict(
        env_prefix="ACULA_", extra="ignore", env_file=None, hide_input_in_errors=True
    )
    _keys: list[bytes] = PrivateAttr(default_factory=list)

    # --- model ---
    bundle: Path = Field(default=DEFAULT_BUNDLE, description="Model bundle folder (manifest.json inside).")
    provider: Literal["cpu", "cuda", "auto"] = Field(
        default="auto",
        description="Execution provider. 'auto' uses CUDA when the GPU build sees a GPU; 'cuda' warns loudly "
        "if it falls back to CPU.",
    )
    intra_op_threads: int = Field(
        default=1,
        ge=1,
        description="onnxruntime intra-op threads per running batch (see INFERENCE_WORKERS).",
    )
    inference_workers: int = Field(
        default_factory=lambda: min(8, available_cpus()),
        ge=1,
        le=64,
        description="Batches the encoder runs at once, each in its own thread with INTRA_OP_THREADS threads.",
    )
    inter_op_threads: int = Field(default=1, ge=1, description="onnxruntime inter-op threads.")
    faiss_threads: int = Field(default=1, ge=1, description="OpenMP threads FAISS may use for a search.")
    warm_up: bool = Field(default=True, description="Run every batch size once at start, before readiness.")

    # --- HTTP ---
    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 in a container.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    root_path: str = Field(default="", description="Path prefix the gateway serves us under, e.g. /acula.")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", description="Proxies whose X-Forwarded-* headers are trusted (comma list, or *)."
    )
    client_id_header: str = Field(
        default="X-Client-ID", description="Header carrying the gateway's client id (logged)."
    )

    # --- batching and admission ---
    max_batch_size: int = Field(
        default=0, ge=0, le=1024, description="Most windows in one encoder call; 0: 8 on CPU, 32 on CUDA."
    )
    max_wait_ms: float = Field(
        default=2.0, ge=0, description="Longest a window waits for others to fill a batch."
    )
    max_inference_requests: int = Field(
        default=64,
        ge=1,
        description="Inference requests (POST /predict, /embed, /similar-reports) in the service at once, "
        "from their headers to their response; the next gets 503 before its body is read.",
    )
    decode_workers: int = Field(
        default=2, ge=1, description="Threads decoding uploads (bounds concurrent decodes)."
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After seconds sent with 503 overloaded.")

    # --- input limits ---
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Largest request body, in bytes."
    )
    max_audio_seconds: float = Field(
        default=600.0, gt=0, description="Longest recording accepted, in seconds."
    )
    max_decoded_samples: int = Field(
        default=DEFAULT_MAX_SAMPLES,
        ge=1000,
        description="Most samples (frames x channels, at the file's own rate) one upload may decode: bounds "
        "the cost of a decode, which duration alone does not (a high rate or many channels).",
    )
    max_top_k: int = Field(default=50, ge=1, description="Largest k for similar reports.")
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Largest request line plus headers, in bytes; more gets 431 and the connection closed.",
    )
    max_headers: int = Field(default=100, ge=8, description="Most request headers; more gets 431.")

    # --- timeouts and shutdown ---
    request_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Deadline of an inference request from its headers to its response, body, decode queue "
        "and inference included (504): the longest it holds an admission slot.",
    )
    keepalive_timeout_s: float = Field(default=5.0, gt=0, description="HTTP keep-alive timeout.")
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Deadline for a request head (request line and headers) once the server waits for one; "
        "past it the connection is closed (408 when a head was started).",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Deadline for the whole request body, from the headers to its last byte (408); below "
        "REQUEST_TIMEOUT_S.",
    )
    drain_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="After SIGTERM: seconds /readyz reports 503 before the listener closes.",
    )
    graceful_shutdown_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait for in-flight requests at shutdown; requests still running then are cut "
        "and acula serve exits 1.",
    )

    # --- security ---
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Accepted API keys (comma separated). Empty with no file: auth off."
    )
    api_keys_file: FilePath | None = Field(
        default=None, description="File with one API key per line (# comments)."
    )

    # --- logging ---
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    log_json: bool = Field(default=True, description="JSON log lines (false: plain text for a terminal).")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("root_path")
    @classmethod
    def _normalise_root(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith("/"):
            value = "/" + value
        return value

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, data: object) -> object:
        # ACULA_API_KEYS="" (a template's empty default) leaves authentication off; " , " does not.
        if isinstance(data, dict) and isinstance(data.get("api_keys"), str) and not data["api_keys"].strip():
            data = {key: value for key, value in data.items() if key != "api_keys"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        renamed = [f"{old} is now {new}" for old, new in RENAMED.items() if old in os.environ]
        if renamed:
            raise ValueError("renamed settings: " + "; ".join(renamed))
        if self.body_timeout_s >= self.request_timeout_s:
            raise ValueError(
                f"ACULA_BODY_TIMEOUT_S ({self.body_timeout_s:g}) must be below ACULA_REQUEST_TIMEOUT_S "
                f"({self.request_timeout_s:g}): the body is part of the request"
            )
        self._keys = self._read_api_keys()
        return self

    def audio_limits(self, min_seconds: float = 0.0) -> AudioLimits:
        """What one upload may cost the decoder (``min_seconds`` is the bundle's)."""
        return AudioLimits(
            max_bytes=self.max_upload_bytes,
            max_seconds=self.max_audio_seconds,
            max_samples=self.max_decoded_samples,
            min_seconds=min_seconds,
        )

    def resolved_api_keys(self) -> list[bytes]:
        """All keys from the environment and the key file (read once, at validation), as bytes for
        ``hmac.compare_digest``; empty when authentication is off."""
        return list(self._keys)

    def _read_api_keys(self) -> list[bytes]:
        """Authentication is on exactly when a key setting is given: a key file that is empty or holds only
        comments, or ``ACULA_API_KEYS`` with only separators, is a mistake (an unmounted secret, a bad
        template) that would otherwise turn authentication off without a word, so it is refused, naming
        the setting. Keys are visible ASCII (what an HTTP header carries unchanged): any other key could
        never match, and is refused the same way."""
        keys: list[tuple[str, str]] = []
        if "api_keys" in self.model_fields_set:
            given = [key.get_secret_value() for key in self.api_keys]
            if not given:
                raise ValueError(
                    "ACULA_API_KEYS is set but holds no key (unset it to turn authentication off)"
                )
            keys += [("ACULA_API_KEYS", key) for key in given]
        if self.api_keys_file is not None:
            lines = [line.strip() for line in self.api_keys_file.read_text(errors="replace").splitlines()]
            from_file = [line for line in lines if line and not line.startswith("#")]
            if not from_file:
                raise ValueError(
                    f"ACULA_API_KEYS_FILE names {self.api_keys_file}, which holds no key "
                    "(only blank or # comment lines): mount the secret, or unset the setting"
                )
            keys += [("ACULA_API_KEYS_FILE", key) for key in from_file]
        for setting, key in keys:
            if not _KEY.fullmatch(key):
                raise ValueError(
                    f"{setting}: a key holds characters other than visible ASCII (letters, digits, "
                    "punctuation), which no request header carries unchanged: such a key could never match"
                )
        return [key.encode("ascii") for _, key in keys]
