"""The committed default bundle keeps the promises the README makes about it.

``make serve`` starts the service on ``models/acula-default``; these tests hold that bundle to its contract
(hashes, size budget, provenance, a de-identified corpus, held-out metrics per probe, a model card) and run
it for real: the README's serve command on loopback, and ``acula predict`` on a recording of every dataset,
whose answers must equal the service's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acula.service.bundle import load_manifest
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
    assert manifest.name == "acula-default"
    on_disk = sum(path.stat().st_size for path in DEFAULT_BUNDLE.rglob("*") if path.is_file())
    assert on_disk < SIZE_BUDGET_BYTES, f"bundle is {on_disk / 2**20:.1f} MiB, budget 50 MiB"


def test_manifest_records_where_the_bundle_came_from() -> None:
    provenance = load_manifest(DEFAULT_BUNDLE).provenance
    assert len(provenance.project_commit) == 40, provenance.project_commit
    assert provenance.teacher and provenance.training_config
    trained_on = {dataset.name: dataset.recordings for dataset in provenance.datasets}
    assert {"sprsound", "physionet2016", "bmd_hs", "coswara"} <= set(trained_on)
    assert all(dataset.licence for dataset in provenance.datasets)


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
        assert set(answer["tasks"]) == {probe.task for probe in manifest.probes}
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
