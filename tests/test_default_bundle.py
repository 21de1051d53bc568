"""The committed default bundle keeps the promises the README makes about it.

``make serve`` starts the service on ``models/acula-default``; these tests hold that bundle to its contract
(hashes, size budget, provenance, a de-identified corpus, held-out metrics per probe, a model card) and run
it for real: the README's serve command on loopback, and ``acula predict`` on a recording of every dataset,
whose answers must equal the service's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acula.service.bundle import SCHEMA_VERSION, load_manifest
from acula.training.nets.efficientat import MN04_AS_SHA256
from tests.support.predict_checks import real_recordings, same_prediction
from tests.support.server import REPO, LiveServer, serve

DEFAULT_BUNDLE = REPO / "models" / "acula-default"
SIZE_BUDGET_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(DEFAULT_BUNDLE, tmp_path_factory.mktemp("default")) as live:
        yield live


def test_manifest_verifies_and_fits_the_size_budget() -> None:
    manifest = load_manifest(DEFAULT_BUNDLE)  # checks the SHA-256 of every file it names
    assert manifest.name == "acula-default" and manifest.version == "0.2.1"
    assert manifest.schema_version == SCHEMA_VERSION
    on_disk = sum(path.stat().st_size for path in DEFAULT_BUNDLE.rglob("*") if path.is_file())
    assert on_disk < SIZE_BUDGET_BYTES, f"bundle is {on_disk / 2**20:.1f} MiB, budget 50 MiB"


def test_manifest_records_where_the_bundle_came_from() -> None:
    provenance = load_manifest(DEFAULT_BUNDLE).provenance
    # A commit, '+dirty' when the tree differed from it at export (here: documentation edited meanwhile).
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", provenance.project_commit), provenance.project_commit
    assert provenance.teacher and provenance.training_config
    trained_on = {dataset.name: dataset.recordings for dataset in provenance.datasets}
    assert {"sprsound", "physionet2016", "bmd_hs", "coswara"} <= set(trained_on)
    assert all(dataset.licence for dataset in provenance.datasets)


def test_the_pretrained_weights_and_their_licences_travel_with_the_bundle() -> None:
    manifest = load_manifest(DEFAULT_BUNDLE)
    weights = manifest.provenance.pretrained
    assert weights is not None and weights.sha256 == MN04_AS_SHA256 and weights.licence == "MIT"
    assert weights.file == "mn04_as_mAP_432.pt"
    for name in weights.licence_files:
        text = (DEFAULT_BUNDLE / name).read_text()
        assert name in manifest.files and "Permission is hereby granted, free of charge" in text  # MIT
    card = (DEFAULT_BUNDLE / "MODEL_CARD.md").read_text()
    assert MN04_AS_SHA256 in card and "EfficientAT" in card
    assert manifest.audio.sample_rate == 32000


def test_onnx_matched_torch_on_real_recordings_of_every_stored_rate() -> None:
    """The export's parity check (<= 1e-4) ran on real recordings stored at 2, 4, 8 and 16 kHz."""
    notes = json.loads((DEFAULT_BUNDLE / "export_notes.json").read_text())
    assert notes["parity_max_abs_diff"] <= 1e-4
    assert {r["native_rate"] for r in notes["parity_recordings"]} >= {2000, 4000, 8000, 16000}


def test_the_answer_is_gated_calibrated_and_flagged() -> None:
    """What issue 18 asks the default bundle to carry: domains, the sound-type classifier with its held-out
    confusion matrix, calibration figures and the out-of-distribution threshold, in manifest and card."""
    manifest = load_manifest(DEFAULT_BUNDLE)
    assert all(probe.domain.known for probe in manifest.probes)
    assert {p.task for p in manifest.probes if p.purpose == "demographic"} >= {"sprsound-age", "coswara-sex"}
    assert any(p.purpose == "quality" for p in manifest.probes)
    classifiers = [p for p in manifest.probes if p.kind != "regression"]
    assert classifiers and all(p.calibration is not None for p in classifiers)
    sound_type = manifest.sound_type
    assert sound_type is not None and "not_auscultation" in sound_type.labels
    assert len(sound_type.confusion) == len(sound_type.labels) and sound_type.metrics["accuracy"] > 0.8
    assert manifest.out_of_distribution is not None and manifest.out_of_distribution.flag_rates
    card = (DEFAULT_BUNDLE / "MODEL_CARD.md").read_text()
    for needed in ("Sound type", "out-of-distribution", "ECE"):
        assert needed.lower() in card.lower(), f"MODEL_CARD.md does not mention {needed!r}"


def test_probes_carry_held_out_metrics_and_the_corpus_is_deidentified() -> None:
    manifest = load_manifest(DEFAULT_BUNDLE)
    tasks = {probe.task: probe for probe in manifest.probes}
    assert {"sprsound-adventitious", "physionet-abnormal", "sprsound-age"} <= set(tasks)
    for probe in manifest.probes:
        assert probe.metrics, f"probe {probe.task} has no held-out metrics"
        assert (probe.kind == "regression") == (not probe.labels)
    assert tasks["sprsound-age"].unit == "years"
    assert manifest.report_index is not None and manifest.report_index.deidentified
    assert manifest.report_index.count > 1000


def test_model_card_states_use_data_metrics_and_limits() -> None:
    card = (DEFAULT_BUNDLE / "MODEL_CARD.md").read_text()
    for needed in ("not a diagnostic device", "Limitations", "CC BY", "physionet-abnormal", "openSMILE"):
        assert needed in card, f"MODEL_CARD.md does not mention {needed!r}"


@pytest.mark.slow
def test_readme_serve_command_and_cli_agree_on_every_dataset(server: LiveServer, shared_data: Path) -> None:
    paths = real_recordings(shared_data)
    assert len(paths) >= 5
    manifest = load_manifest(DEFAULT_BUNDLE)
    for answer in same_prediction(server, DEFAULT_BUNDLE, paths):
        assert "tasks" in answer, f"a real recording was refused: {answer}"
        answered = set(answer["tasks"]) | {skip["task"] for skip in answer.get("skipped", [])}
        assert answered == {probe.task for probe in manifest.probes}  # every probe run or said skipped
        assert len(answer["reports"]) == 3 and answer["reports"][0]["text"]


def test_similar_reports_by_free_text(server: LiveServer) -> None:
    """The bundle's text side lets the service search the report corpus by text, without torch."""
    response = httpx.post(
        f"{server.url}/similar-reports",
        data={"query": "Wheezes heard over the chest of a child."},
        params={"k": 5},
        timeout=30.0,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "text" and len(body["reports"]) == 5
    assert any("wheez" in report["text"].lower() for report in body["reports"])
