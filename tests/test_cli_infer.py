"""``acula embed`` and ``acula predict`` agree exactly with HTTP; ``acula serve`` refuses a missing bundle."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from acula.service.cli import full_app
from tests.support.bundles import TinyBundleOptions, build_tiny_bundle, family_wav, write_wav
from tests.support.predict_checks import real_recordings, runner, same_prediction
from tests.support.server import REPO, LiveServer, serve

app = full_app()


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(tiny_bundle, tmp_path_factory.mktemp("cli")) as live:
        yield live


def _recordings(tmp_path: Path) -> list[Path]:
    return [
        write_wav(tmp_path / "a.wav", 7.3, rate=4000, seed=11),
        write_wav(tmp_path / "b.wav", 2.0, seed=12),
    ]


def test_predict_json_is_identical_to_http(server: LiveServer, tiny_bundle: Path, tmp_path: Path) -> None:
    same_prediction(server, tiny_bundle, _recordings(tmp_path))


def test_predict_on_real_recordings_of_every_dataset(
    server: LiveServer, tiny_bundle: Path, shared_data: Path
) -> None:
    paths = real_recordings(shared_data)
    assert len(paths) >= 5
    same_prediction(server, tiny_bundle, paths)


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gated") / "bundle"
    build_tiny_bundle(path, TinyBundleOptions(gated=True))
    return path


@pytest.fixture(scope="module")
def gated_server(gated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(gated, tmp_path_factory.mktemp("cli-gated")) as live:
        yield live


def _family_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for label in ("heart", "lung", "cough", "breathing", "not_auscultation"):
        files[label] = tmp_path / f"{label}.wav"
        files[label].write_bytes(family_wav(label))
    return files


def test_gated_answers_are_identical_to_http(gated_server: LiveServer, gated: Path, tmp_path: Path) -> None:
    """Sound type, skipped probes, warnings and the not_auscultation refusal: the CLI says what HTTP says."""
    files = _family_files(tmp_path)
    answers = same_prediction(gated_server, gated, list(files.values()))
    assert [a.get("sound_type", {}).get("value") for a in answers] == [
        "heart",
        "lung",
        "cough",
        "breathing",
        None,
    ]
    assert answers[-1]["code"] == "not_auscultation"
    stated = {"sound_type": "lung", "age_group": "adult", "site": "anterior"}
    for answer in same_prediction(gated_server, gated, [files["heart"], files["lung"]], stated):
        assert answer["sound_type"]["source"] == "client" and answer["tasks"] == {}
        assert {s["reason"] for s in answer["skipped"]} >= {"population_mismatch"}


def test_predict_fhir_is_the_services_fhir_bundle(
    gated_server: LiveServer, gated: Path, tmp_path: Path
) -> None:
    from fhir.resources.R4B.bundle import Bundle

    path = _family_files(tmp_path)["heart"]
    result = runner.invoke(app, ["predict", "--bundle", str(gated), str(path), "--fhir"])
    assert result.exit_code == 0, result.output
    cli = Bundle.model_validate_json(result.output)
    http = Bundle.model_validate_json(
        httpx.post(
            f"{gated_server.url}/predict",
            files={"file": (path.name, path.read_bytes())},
            headers={"Accept": "application/fhir+json"},
            timeout=30.0,
        ).text
    )

    def content(bundle: Bundle) -> list[dict]:  # ids of observations and timestamps differ by design
        resources = [entry.resource.model_dump(mode="json") for entry in bundle.entry]
        for resource in resources:
            resource.pop("issued", None)
        return resources

    assert content(cli) == content(http)
    assert cli.entry[0].fullUrl == http.entry[0].fullUrl  # the Device: one id per model digest


def test_predict_human_output_says_what_was_chosen_and_why(gated: Path, tmp_path: Path) -> None:
    files = _family_files(tmp_path)
    result = runner.invoke(app, ["predict", "--bundle", str(gated), str(files["heart"])])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "sound type: heart (model, probability" in out and "sha256:" in out
    assert "murmur: " in out and "valve: " in out and "uncalibrated" in out
    assert "skipped sound [sound_type_mismatch]" in out and "skipped age [demographic_not_requested]" in out
    assert "warning [poor_quality]" in out
    stated = runner.invoke(
        app, ["predict", "--bundle", str(gated), str(files["lung"]), "--sound-type", "heart"]
    )
    assert "sound type: heart (client" in stated.output and "the model hears lung" in stated.output
    refused = runner.invoke(app, ["predict", "--bundle", str(gated), str(files["not_auscultation"])])
    assert refused.exit_code == 1 and "[not_auscultation]" in refused.output
    invalid = runner.invoke(
        app, ["predict", "--bundle", str(gated), str(files["lung"]), "--age-group", "old"]
    )
    assert invalid.exit_code == 1 and "[invalid_query]" in invalid.output


def test_embed_npy_is_identical_to_http(server: LiveServer, tiny_bundle: Path, tmp_path: Path) -> None:
    files = _recordings(tmp_path)
    for flag, key in (("--no-joint", "embedding"), ("--joint", "joint")):
        out = tmp_path / f"{key}.npy"
        result = runner.invoke(
            app, ["embed", "--bundle", str(tiny_bundle), *map(str, files), "--out", str(out), flag]
        )
        assert result.exit_code == 0, result.output
        matrix = np.load(out, allow_pickle=False)
        assert matrix.dtype == np.float32 and matrix.shape[0] == len(files)
        for row, path in zip(matrix, files, strict=True):
            body = httpx.post(f"{server.url}/embed", files={"file": (path.name, path.read_bytes())}).json()
            np.testing.assert_array_equal(row, np.asarray(body[key], dtype=np.float32))


def test_embed_rows_do_not_depend_on_jobs(tiny_bundle: Path, tmp_path: Path) -> None:
    files = [write_wav(tmp_path / f"r{i}.wav", 1.5 + i, seed=20 + i) for i in range(5)]
    matrices = []
    for jobs in ("1", "3"):
        out = tmp_path / f"j{jobs}.npy"
        args = ["embed", "--bundle", str(tiny_bundle), *map(str, files), "--out", str(out), "-j", jobs]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert f"{jobs} at once" in result.output
        matrices.append(np.load(out, allow_pickle=False))
    assert matrices[0].shape[0] == len(files)
    np.testing.assert_array_equal(matrices[0], matrices[1])  # row i is file i, bit for bit


def test_embed_names_every_unreadable_file_and_writes_nothing(tiny_bundle: Path, tmp_path: Path) -> None:
    good = write_wav(tmp_path / "good.wav", 2.0)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_bytes(b"not a recording" * 8)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    out = tmp_path / "e.npy"
    files = [not_audio, good, empty]
    result = runner.invoke(app, ["embed", "--bundle", str(tiny_bundle), *map(str, files), "--out", str(out)])
    assert result.exit_code == 1
    assert "notes.wav: [not_audio]" in result.output and "empty.flac: [empty_input]" in result.output
    assert "2 of 3 file(s) could not be read; nothing written" in result.output
    assert not out.exists()


def test_predict_human_output_and_task_choice(tiny_bundle: Path, tmp_path: Path) -> None:
    path = write_wav(tmp_path / "c.wav", 3.0)
    result = runner.invoke(app, ["predict", "--bundle", str(tiny_bundle), str(path), "-t", "age"])
    assert result.exit_code == 0, result.output
    assert "acula-tiny" in result.output and "age:" in result.output and "sound:" not in result.output


def test_cli_reports_bad_input_with_its_code(tiny_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio at all" * 4)
    result = runner.invoke(app, ["predict", "--bundle", str(tiny_bundle), str(bad)])
    assert result.exit_code == 1 and "not_audio" in result.output
    unknown = runner.invoke(app, ["predict", "--bundle", str(tiny_bundle), str(bad), "-t", "nope"])
    assert unknown.exit_code == 1 and "unknown_task" in unknown.output


def test_serve_without_a_bundle_says_how_to_build_one(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "acula", "serve"]
    default = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert default.returncode != 0
    assert "no default bundle exists yet" in default.stderr and "make train-default" in default.stderr
    other = subprocess.run(
        [*command, "--bundle", str(tmp_path / "nope")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode != 0 and "does not exist" in other.stderr
    from_env = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ACULA_BUNDLE": str(tmp_path / "elsewhere")},
    )
    assert from_env.returncode != 0 and "elsewhere does not exist" in from_env.stderr


def test_predict_without_a_bundle_says_how_to_build_one(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "d.wav", 1.0)
    result = runner.invoke(app, ["predict", "--bundle", str(tmp_path / "missing"), str(path)])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_serve_refuses_a_tampered_bundle_before_listening(tiny_bundle: Path, tmp_path: Path) -> None:
    import shutil

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    (bundle / "reports.jsonl").write_text("{}\n")
    result = subprocess.run(
        [sys.executable, "-m", "acula", "serve", "--bundle", str(bundle)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "reports.jsonl" in result.stderr and "SHA-256" in result.stderr
