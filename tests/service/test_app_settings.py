"""Settings from the environment, their documentation, and the torch-free import of the service."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from acula.service.settings import Settings, available_cpus

REPO = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    doc = (REPO / "docs" / "CONFIGURATION.md").read_text()
    missing = [name for name in Settings.model_fields if f"`ACULA_{name.upper()}`" not in doc]
    assert not missing, f"document these in docs/CONFIGURATION.md: {missing}"
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not undocumented


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# comment\nfrom-file\n")
    monkeypatch.setenv("ACULA_API_KEYS", "one, two,,")
    monkeypatch.setenv("ACULA_API_KEYS_FILE", str(keys))
    monkeypatch.setenv("ACULA_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("ACULA_ROOT_PATH", "acula/")
    monkeypatch.setenv("ACULA_PROVIDER", "cuda")
    settings = Settings()
    assert settings.resolved_api_keys() == [b"one", b"two", b"from-file"]
    assert settings.max_batch_size == 8 and settings.root_path == "/acula" and settings.provider == "cuda"
    assert "one" not in repr(settings)  # keys are secrets


def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACULA_PROVIDER", "tpu")
    with pytest.raises(ValidationError):
        Settings()


def test_default_threads_respect_the_cpu_limit() -> None:
    assert 1 <= available_cpus() <= (len(__import__("os").sched_getaffinity(0)))
    settings = Settings()
    assert settings.intra_op_threads == 1 and 1 <= settings.inference_workers <= min(8, available_cpus())


def test_openapi_example_is_a_valid_response() -> None:
    from acula.service.api.schemas import PREDICT_EXAMPLE, PredictResponse

    assert PredictResponse.model_validate(PREDICT_EXAMPLE).tasks["coswara_age"].kind == "regression"
