"""Every knob of the service, in one pydantic-settings object (environment prefix ``ACULA_``).

Each field is also documented in ``docs/CONFIGURATION.md``; a test keeps the two in step. Thread counts are
explicit because onnxruntime and FAISS size their pools from the host's cores, not the container's CPU limit:
the defaults read the cgroup limit instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from acula.service.bundle import DEFAULT_BUNDLE


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

    model_config = SettingsConfigDict(env_prefix="ACULA_", extra="ignore", env_file=None)

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
    max_queue: int = Field(
        default=64, ge=1, description="Requests processed at once (decode to result); more get 503 at once."
    )
    max_concurrency: int = Field(
        default=0,
        ge=0,
        description="POST requests (inference routes) in the service at once, from their headers to their "
        "response; more get 503 before their body is read. 0: max_queue.",
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
    max_top_k: int = Field(default=50, ge=1, description="Largest k for similar reports.")

    # --- timeouts and shutdown ---
    request_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest a request may wait for inference (504)."
    )
    keepalive_timeout_s: float = Field(default=5.0, gt=0, description="HTTP keep-alive timeout.")
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest pause between body bytes of an upload before 408."
    )
    drain_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="After SIGTERM: seconds /readyz reports 503 before the listener closes.",
    )
    graceful_shutdown_s: float = Field(
        default=30.0, gt=0, description="Longest wait for in-flight requests at shutdown."
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

    @property
    def admission_limit(self) -> int:
        """``max_concurrency``, or ``max_queue`` when it is 0 (the default): then every request the runtime
        could refuse is refused here instead, before its upload is received and parsed."""
        return self.max_concurrency or self.max_queue

    def resolved_api_keys(self) -> list[bytes]:
        """All keys from the environment and the key file, as bytes for ``hmac.compare_digest``."""
        keys = [key.get_secret_value() for key in self.api_keys]
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        return [key.encode() for key in keys]
