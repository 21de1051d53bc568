"""Settings from the environment, their documentation, and the torch-free import of the service."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from acula.service.settings import RENAMED, Settings, available_cpus

REPO = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    doc = (REPO / "docs" / "CONFIGURATION.md").read_text()
    missing = [name for name in Settings.model_fields if f"`ACULA_{name.upper()}`" not in doc]
    assert not missing, f"document these in docs/CONFIGURATION.md: {missing}"
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not undocumented
    # ...and no table row documents a setting that no longer exists (a renamed one, say).
    rows = set(re.findall(r"^\| `ACULA_([A-Z0-9_]+)` \|", doc, re.MULTILINE))
    assert rows == {name.upper() for name in Settings.model_fields}, rows ^ {
        n.upper() for n in Settings.model_fields
    }


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_a_renamed_setting_stops_the_service_naming_the_new_one(
    monkeypatch: pytest.MonkeyPatch, old: str
) -> None:
    monkeypatch.setenv(old, "10")
    with pytest.raises(ValidationError, match=f"{old} is now {RENAMED[old]}"):
        Settings()


@pytest.mark.parametrize(
    ("keys", "file_text", "setting"),
    [
        (" , ", None, "ACULA_API_KEYS"),
        (",", None, "ACULA_API_KEYS"),
        (None, "", "ACULA_API_KEYS_FILE"),
        (None, "# rotated 2026-11\n\n   \n# nothing left\n", "ACULA_API_KEYS_FILE"),
        (None, "caf\u00e9-key\n", "ACULA_API_KEYS_FILE"),
        ("good, b\u00e4d", None, "ACULA_API_KEYS"),
    ],
    ids=["separators-only", "one-comma", "empty-file", "comments-only", "non-ascii-in-file", "non-ascii"],
)
def test_configured_but_empty_or_unusable_keys_refuse_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: str | None, file_text: str | None, setting: str
) -> None:
    """Authentication must never fail open: a key setting that yields no usable key is a mistake."""
    if keys is not None:
        monkeypatch.setenv("ACULA_API_KEYS", keys)
    if file_text is not None:
        path = tmp_path / "keys"
        path.write_text(file_text, encoding="utf-8")
        monkeypatch.setenv("ACULA_API_KEYS_FILE", str(path))
    with pytest.raises(ValidationError, match=setting) as caught:
        Settings()
    assert "good" not in str(caught.value)  # never the keys themselves


def test_an_empty_key_variable_means_authentication_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ACULA_API_KEYS: ${ACULA_API_KEYS:-}`` in docker-compose: unset, not misconfigured."""
    monkeypatch.setenv("ACULA_API_KEYS", "")
    assert Settings().resolved_api_keys() == []


def test_the_body_deadline_must_be_inside_the_request_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACULA_BODY_TIMEOUT_S", "60")
    with pytest.raises(ValidationError, match="BODY_TIMEOUT_S"):
        Settings()


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
    from acula.service.api.schemas import PREDICT_EXAMPLES, PredictResponse

    for example in PREDICT_EXAMPLES.values():  # heart, lung, uncertain: each round-trips unchanged
        parsed = PredictResponse.model_validate(example)
        assert parsed.model_dump(mode="json", exclude_none=True) == example
