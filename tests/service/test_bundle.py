"""The bundle contract: a bundle written by ``write_manifest`` loads, and any damage to it is refused by name.

The bundle is the real thing (tests/support/bundles.py: an ONNX encoder and text encoder, ``.npz`` probes, a
FAISS index, a report corpus) plus a model card hashed as an extra file, so every kind of file a bundle holds
is flipped, deleted or left out of the manifest below.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from acula.service.bundle import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    BundleError,
    Manifest,
    load_manifest,
    read_manifest,
    write_manifest,
)
from tests.support.bundles import TinyBundleOptions, build_tiny_bundle

HASHED_FILES = [
    "encoder.onnx",
    "probe_sound.npz",
    "probe_disease.npz",
    "probe_age.npz",
    "reports.faiss",
    "reports.jsonl",
    "text_encoder.onnx",
    "tokenizer.json",
    "MODEL_CARD.md",
]
ALL_FILES = [MANIFEST_NAME, *HASHED_FILES]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete bundle with a text side and a model card; tests copy it before damaging it."""
    path = tmp_path_factory.mktemp("bundle") / "acula-tiny"
    build_tiny_bundle(path, TinyBundleOptions(text_side=True))
    (path / "MODEL_CARD.md").write_text("# acula-tiny\n\nA test bundle; not a trained model.\n")
    write_manifest(path, read_manifest(path), extra_files=["MODEL_CARD.md"])  # re-seal, as the pipeline does
    return path


@pytest.fixture
def bundle(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "bundle"))


def _seal(bundle: Path, raw: dict) -> None:
    """Write ``raw`` as manifest.json the way ``write_manifest`` does, self-hash included, without validating.

    The format is part of the contract: JSON with indent 2 and a final newline; ``manifest_sha256`` is the
    SHA-256 of the file's bytes with that value set to 64 zeros.
    """
    raw = raw | {"manifest_sha256": "0" * 64}
    text = json.dumps(raw, indent=2) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    (bundle / MANIFEST_NAME).write_text(text.replace('"' + "0" * 64 + '"', f'"{digest}"'))


def _raw(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST_NAME).read_text())


def test_a_written_bundle_loads_and_hashes_every_file(bundle: Path) -> None:
    manifest = load_manifest(bundle)

    assert sorted(manifest.files) == sorted(HASHED_FILES)
    assert set(manifest.named_files()) <= set(manifest.files)
    assert sorted(p.name for p in bundle.iterdir()) == sorted(ALL_FILES)  # the parametrisation covers all
    assert manifest.schema_version == SCHEMA_VERSION and manifest.manifest_sha256 is not None
    assert manifest.text_side is not None and manifest.report_index is not None and len(manifest.probes) == 3


def test_write_returns_what_load_reads(tmp_path: Path) -> None:
    written = build_tiny_bundle(tmp_path / "b")
    assert load_manifest(tmp_path / "b") == written


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("name", ALL_FILES)
def test_flipping_one_byte_in_any_file_is_refused_naming_it(bundle: Path, name: str, where: str) -> None:
    path = bundle / name
    data = bytearray(path.read_bytes())
    position = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[position] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(BundleError) as caught:
        load_manifest(bundle)
    assert caught.value.file == name
    assert name in str(caught.value)


def test_an_edit_to_the_manifest_that_keeps_it_valid_json_is_refused(bundle: Path) -> None:
    """Without the self-hash, changing the sample rate or a label would silently change predictions."""
    text = (bundle / MANIFEST_NAME).read_text()
    (bundle / MANIFEST_NAME).write_text(text.replace('"sample_rate": 8000', '"sample_rate": 16000'))

    with pytest.raises(BundleError, match="altered") as caught:
        load_manifest(bundle)
    assert caught.value.file == MANIFEST_NAME


def test_a_manifest_without_its_self_hash_is_refused(bundle: Path) -> None:
    raw = _raw(bundle)
    del raw["manifest_sha256"]
    (bundle / MANIFEST_NAME).write_text(json.dumps(raw, indent=2) + "\n")

    with pytest.raises(BundleError, match="manifest_sha256") as caught:
        load_manifest(bundle)
    assert caught.value.file == MANIFEST_NAME


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1, "1", None])
def test_an_unknown_schema_version_is_refused(bundle: Path, version: object) -> None:
    _seal(bundle, _raw(bundle) | {"schema_version": version})

    with pytest.raises(BundleError, match="schema_version") as caught:
        load_manifest(bundle)
    assert caught.value.file == MANIFEST_NAME


@pytest.mark.parametrize("name", HASHED_FILES)
def test_a_missing_file_is_refused_naming_it(bundle: Path, name: str) -> None:
    (bundle / name).unlink()

    with pytest.raises(BundleError, match="missing") as caught:
        load_manifest(bundle)
    assert caught.value.file == name


def test_a_folder_without_manifest_is_not_a_bundle(bundle: Path) -> None:
    (bundle / MANIFEST_NAME).unlink()

    with pytest.raises(BundleError, match="not a model bundle") as caught:
        load_manifest(bundle)
    assert caught.value.file == MANIFEST_NAME


@pytest.mark.parametrize("name", ["encoder.onnx", "probe_age.npz", "reports.faiss", "tokenizer.json"])
def test_a_manifest_naming_a_file_it_does_not_hash_is_refused(bundle: Path, name: str) -> None:
    raw = _raw(bundle)
    raw["files"] = {key: value for key, value in raw["files"].items() if key != name}
    _seal(bundle, raw)

    with pytest.raises(BundleError, match=f"not hashed.*{name}") as caught:
        load_manifest(bundle)
    assert caught.value.file == MANIFEST_NAME


def test_a_hashed_path_outside_the_bundle_is_refused(bundle: Path) -> None:
    outside = bundle.parent / "outside.txt"
    outside.write_text("not part of the bundle\n")
    raw = _raw(bundle)
    raw["files"]["../outside.txt"] = hashlib.sha256(outside.read_bytes()).hexdigest()
    _seal(bundle, raw)

    with pytest.raises(BundleError, match="escapes") as caught:
        load_manifest(bundle)
    assert caught.value.file == "../outside.txt"


def test_invalid_json_is_refused(bundle: Path) -> None:
    (bundle / MANIFEST_NAME).write_text('{"schema_version": 1, ')
    with pytest.raises(BundleError, match="not valid JSON"):
        load_manifest(bundle)


def test_write_refuses_a_named_file_that_does_not_exist(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    (bundle / "probe_sound.npz").unlink()

    with pytest.raises(BundleError, match="probe_sound.npz does not exist") as caught:
        write_manifest(bundle, manifest)
    assert caught.value.file == "probe_sound.npz"


def test_write_refuses_to_hash_the_manifest_itself(bundle: Path) -> None:
    with pytest.raises(BundleError, match="hashes itself"):
        write_manifest(bundle, read_manifest(bundle), extra_files=[MANIFEST_NAME])


def test_the_schema_refuses_unknown_fields(bundle: Path) -> None:
    raw = _raw(bundle)
    raw["audio"]["sampel_rate"] = 8000
    with pytest.raises(ValueError, match="sampel_rate"):
        Manifest.model_validate(raw)
