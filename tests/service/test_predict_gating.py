"""/predict answers only what applies: the sound-type gate, calibration, out-of-distribution and quality
warnings, the not_auscultation refusal and the model's identity, on a gated tiny bundle (whose sound-type
classifier was built to recognise one tone per class, see tests/support/bundles.py) through a live
``acula serve`` on loopback, and in process through the pipeline the CLI and the Python API use."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from acula.service.api.schemas import predict_response
from acula.service.bundle import BundleError, read_manifest, write_manifest
from acula.service.core.applicability import ClientContext
from acula.service.core.errors import InvalidQuery, NotAuscultation
from acula.service.core.pipeline import InferencePipeline
from acula.service.model import AculaModel
from tests.support.bundles import (
    GATED_PROBES,
    SOUND_TYPE_TEMPERATURE,
    TinyBundleOptions,
    build_tiny_bundle,
    downgrade_to_v1,
    family_wav,
    noise_wav,
    wav_bytes,
)
from tests.support.server import LiveServer, serve

ALL = {probe.task for probe in GATED_PROBES}
# What each sound type runs by default (demographic probes never do).
RUNS = {
    "heart": ["murmur", "valve", "heart-quality"],
    "lung": ["sound", "lung-quality"],
    "cough": ["covid"],
    "breathing": ["covid"],
}


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gated") / "bundle"
    build_tiny_bundle(path, TinyBundleOptions(gated=True, name="acula-gated"))
    return path


@pytest.fixture(scope="module")
def pipeline(gated: Path) -> InferencePipeline:
    return InferencePipeline.from_bundle(gated, provider="cpu")


@pytest.fixture(scope="module")
def server(gated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(gated, tmp_path_factory.mktemp("gated-server")) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


def _post(client: httpx.Client, data: bytes, **params: object) -> httpx.Response:
    return client.post("/predict", params=params, files={"file": ("a.wav", data)})


def _answer(client: httpx.Client, data: bytes, **params: object) -> dict:
    response = _post(client, data, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    # Every probe of the bundle is answered or skipped, never both.
    assert set(body["tasks"]).isdisjoint(s["task"] for s in body["skipped"])
    assert set(body["tasks"]) | {s["task"] for s in body["skipped"]} == ALL
    return body


def _codes(body: dict) -> list[tuple[str, str | None]]:
    return [(w["code"], w.get("task")) for w in body["warnings"]]


# --- through the live service ------------------------------------------------------------------------------
@pytest.mark.parametrize("sound_type", list(RUNS))
def test_the_models_sound_type_chooses_the_probes(client: httpx.Client, sound_type: str) -> None:
    body = _answer(client, family_wav(sound_type))
    decided = body["sound_type"]
    assert (decided["value"], decided["source"]) == (sound_type, "model")
    assert decided["probability"] >= 0.8 and decided["model"]["label"] == sound_type
    assert decided["model"]["calibrated"] is True
    assert list(body["tasks"]) == RUNS[sound_type]
    skipped = {s["task"]: s["reason"] for s in body["skipped"]}
    assert skipped["age"] == skipped["sex"] == "demographic_not_requested"
    assert {reason for task, reason in skipped.items() if task not in ("age", "sex")} == {
        "sound_type_mismatch"
    }
    assert body["out_of_distribution"]["flagged"] is False
    check = decided["model"]["check"]  # the upload against the training recordings of its own type
    assert check["sound_type"] == sound_type and check["flagged"] is False
    assert 0 <= check["score"] < check["threshold"]
    expected = [("poor_quality", "heart-quality")] if sound_type == "heart" else []
    assert _codes(body) == expected


def test_every_result_says_its_purpose_and_whether_it_is_calibrated(client: httpx.Client) -> None:
    body = _answer(client, family_wav("heart"))
    tasks = body["tasks"]
    assert tasks["murmur"]["calibrated"] is True and tasks["valve"]["calibrated"] is False
    assert tasks["murmur"]["purpose"] == "diagnostic" and tasks["heart-quality"]["purpose"] == "quality"
    assert tasks["heart-quality"]["label"] == "poor quality"
    for result in tasks.values():
        assert all(np.isfinite(p) and 0 <= p <= 1 for p in result["probabilities"].values())
        assert sum(result["probabilities"].values()) == pytest.approx(1.0) or result["kind"] == "multilabel"


def test_a_stated_sound_type_wins_and_a_confident_disagreement_is_a_warning(client: httpx.Client) -> None:
    body = _answer(client, family_wav("lung"), sound_type="heart")
    decided = body["sound_type"]
    assert (decided["value"], decided["source"]) == ("heart", "client")
    assert decided["model"]["label"] == "lung" and decided["probability"] < 0.1
    assert list(body["tasks"]) == RUNS["heart"]
    assert ("sound_type_disagrees", None) in _codes(body)


def test_not_auscultation_is_a_422_problem_with_the_models_probability(client: httpx.Client) -> None:
    response = _post(client, family_wav("not_auscultation"))
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "not_auscultation" and problem["type"] == "urn:acula:problem:not_auscultation"
    assert (
        problem["probability"] >= 0.8
        and problem["probabilities"]["not_auscultation"] == problem["probability"]
    )
    assert problem["model"]["name"] == "acula-gated" and problem["model"]["digest"].startswith("sha256:")
    assert "state sound_type" in problem["detail"] and problem["instance"] == response.headers["x-request-id"]
    # Stating the sound type overrides the refusal: the client knows what it recorded.
    body = _answer(client, family_wav("not_auscultation"), sound_type="lung")
    assert list(body["tasks"]) == RUNS["lung"] and ("sound_type_disagrees", None) in _codes(body)


def test_out_of_distribution_is_scored_and_flagged_with_a_warning(client: httpx.Client) -> None:
    body = _answer(client, noise_wav(), sound_type="heart")
    ood = body["out_of_distribution"]
    assert ood["flagged"] is True and ood["score"] > ood["threshold"] > 0
    assert ("out_of_distribution", None) in _codes(body)
    assert _answer(client, family_wav("cough"))["out_of_distribution"]["score"] < ood["threshold"]


def test_an_out_of_distribution_upload_gets_no_answer_on_the_models_guess(client: httpx.Client) -> None:
    """Noise the reference has never seen: refused as no auscultation, or answered with no probe run and a
    request to state the sound type; never a diagnosis gated on the classifier's guess."""
    response = _post(client, noise_wav())
    if response.status_code == 422:
        assert response.json()["code"] == "not_auscultation"
        return
    body = _answer(client, noise_wav())
    assert body["out_of_distribution"]["flagged"] is True and body["tasks"] == {}
    assert body["sound_type"].get("value") is None and body["sound_type"]["source"] == "model"
    assert {s["reason"] for s in body["skipped"]} <= {"sound_type_uncertain", "demographic_not_requested"}
    assert {"sound_type_uncertain", "out_of_distribution"} <= {code for code, _ in _codes(body)}


def test_demographic_probes_only_when_named_and_named_ones_always_answer(client: httpx.Client) -> None:
    body = _answer(client, family_wav("lung"), tasks="age,murmur")
    assert list(body["tasks"]) == ["murmur", "age"]  # manifest order
    assert body["tasks"]["age"]["purpose"] == "demographic" and body["tasks"]["age"]["unit"] == "years"
    warnings = [(w["code"], w["task"], w["reason"]) for w in body["warnings"]]
    assert warnings == [("not_applicable", "murmur", "sound_type_mismatch")]
    assert {s["reason"] for s in body["skipped"]} == {"not_requested"}


def test_a_stated_age_group_skips_the_other_population(client: httpx.Client) -> None:
    body = _answer(client, family_wav("heart"), age_group="paediatric")
    assert list(body["tasks"]) == ["murmur", "heart-quality"]  # mixed population: both age groups
    assert {s["task"]: s["reason"] for s in body["skipped"]}["valve"] == "population_mismatch"
    named = _answer(client, family_wav("heart"), age_group="paediatric", tasks="valve")
    assert [(w["code"], w["reason"]) for w in named["warnings"]] == [
        ("not_applicable", "population_mismatch")
    ]


def test_a_site_the_probe_never_saw_is_a_warning(client: httpx.Client) -> None:
    body = _answer(client, family_wav("lung"), site="anterior right")
    assert list(body["tasks"]) == RUNS["lung"] and _codes(body) == [("site_not_seen", "sound")]
    assert _codes(_answer(client, family_wav("lung"), site="Posterior Left")) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sound_type": "murmur"}, "sound_type"),
        ({"age_group": "elderly"}, "age_group"),
        ({"site": "x" * 65}, "site"),
    ],
)
def test_invalid_statements_are_422_whichever_way_the_recording_is_sent(
    client: httpx.Client, params: dict, field: str
) -> None:
    multipart = _post(client, family_wav("heart"), **params)
    raw = client.post(
        "/predict", params=params, content=family_wav("heart"), headers={"Content-Type": "audio/wav"}
    )
    for response in (multipart, raw):
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_query" and field in response.json()["detail"]


def test_every_response_names_the_exact_model(client: httpx.Client, gated: Path) -> None:
    digest = f"sha256:{read_manifest(gated).manifest_sha256}"
    expected = {"name": "acula-gated", "version": "0.0.1-test", "digest": digest}
    upload = {"file": ("a.wav", family_wav("heart"))}
    predict = client.post("/predict", files=upload)
    assert predict.json()["model"] == expected and predict.headers["vary"] == "Accept"
    assert client.post("/embed", files=upload).json()["model"] == expected
    assert client.post("/similar-reports", files=upload).json()["model"] == expected
    assert client.get("/v1/model").json()["model"] == expected


def test_embed_and_report_search_take_any_recording(client: httpx.Client) -> None:
    """Only /predict is gated: an embedding or a report search of any upload is no diagnosis."""
    upload = {"file": ("a.wav", family_wav("not_auscultation"))}
    assert client.post("/embed", files=upload).status_code == 200
    assert client.post("/similar-reports", files=upload).status_code == 200


def test_model_info_lists_domains_calibration_the_classifier_and_the_ood_check(client: httpx.Client) -> None:
    body = client.get("/v1/model").json()
    assert body["schema_version"] == 2
    probes = {p["task"]: p for p in body["probes"]}
    assert set(probes) == ALL
    assert (
        probes["valve"]["domain"]["sound_types"] == ["heart"]
        and probes["valve"]["domain"]["population"] == "adult"
    )
    assert probes["age"]["purpose"] == "demographic" and probes["lung-quality"]["purpose"] == "quality"
    assert probes["sound"]["domain"]["sites"] == ["posterior left", "posterior right"]
    assert probes["murmur"]["calibrated"] is True and probes["murmur"]["calibration"]["temperature"] == [1.5]
    assert probes["valve"]["calibrated"] is False and "calibration" in probes["valve"]
    sound_type = body["sound_type"]
    assert sound_type["labels"] == ["heart", "lung", "cough", "breathing", "not_auscultation"]
    assert sound_type["min_probability"] == 0.5 and sound_type["metrics"] == {"accuracy": 1.0}
    assert len(sound_type["confusion"]) == 5 and sound_type["calibrated"] is True
    assert sound_type["calibration"]["temperature"] == [SOUND_TYPE_TEMPERATURE]
    ood = body["out_of_distribution"]
    assert ood["k"] == 3 and ood["reference_count"] == 32 and 0 < ood["threshold"] < 1
    assert set(ood["sound_type_thresholds"]) == set(RUNS)
    assert all(0 < value < 2 for value in ood["sound_type_thresholds"].values())


def test_openapi_documents_the_statements_the_refusal_and_the_fhir_answer(client: httpx.Client) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["sound_type"]["schema"]["enum"] == ["heart", "lung", "cough", "breathing"]
    assert parameters["age_group"]["schema"]["enum"] == ["paediatric", "adult"]
    ok = operation["responses"]["200"]["content"]
    assert set(ok["application/json"]["examples"]) == {"heart", "lung", "uncertain"}
    assert ok["application/fhir+json"]["example"]["resourceType"] == "Bundle"
    problem = operation["responses"]["422"]["content"]["application/problem+json"]["example"]
    assert problem["code"] == "not_auscultation"


# --- in process: the pipeline that the CLI and the Python API share -----------------------------------------
def test_the_temperature_in_the_probe_file_is_applied(pipeline: InferencePipeline, gated: Path) -> None:
    probe = pipeline.sound_type_probe
    assert probe is not None and probe.calibrated
    with np.load(gated / "sound_type.npz") as stored:
        weight, bias, mean, scale = (stored[k] for k in ("weight", "bias", "mean", "scale"))
        assert stored["temperature"].tolist() == [SOUND_TYPE_TEMPERATURE]
    x = pipeline.embed(family_wav("heart")).embedding
    z = ((x - mean) / scale) @ weight.T + bias
    e = np.exp(z / SOUND_TYPE_TEMPERATURE - (z / SOUND_TYPE_TEMPERATURE).max())
    np.testing.assert_allclose(probe.scores(x[None, :])[0], e / e.sum(), rtol=1e-6)
    raw = np.exp(z - z.max())
    assert not np.allclose(probe.scores(x[None, :])[0], raw / raw.sum(), rtol=1e-3)  # not the raw softmax


def test_python_api_matches_the_pipeline_and_refuses_like_the_service(gated: Path) -> None:
    model = AculaModel.load(gated, provider="cpu")
    answer = model.predict(
        family_wav("lung"), sound_type="lung", age_group="paediatric", site="posterior left"
    )
    assert answer.sound_type.source == "client" and list(answer.tasks) == RUNS["lung"]
    with pytest.raises(NotAuscultation) as refused:
        model.predict(family_wav("not_auscultation"))
    assert refused.value.code == "not_auscultation" and refused.value.probability >= 0.8
    with pytest.raises(InvalidQuery):
        model.predict(family_wav("lung"), sound_type="wheeze")
    assert model.similar_reports(family_wav("not_auscultation"), k=3).reports  # search is not gated
    assert json.loads(model.predict_fhir(family_wav("heart")))["resourceType"] == "Bundle"


def test_an_uncertain_sound_type_runs_no_probe_and_asks_for_one(tmp_path: Path) -> None:
    build_tiny_bundle(tmp_path / "unsure", TinyBundleOptions(gated=True, min_probability=0.99999))
    pipeline = InferencePipeline.from_bundle(tmp_path / "unsure", provider="cpu")
    prediction = pipeline.predict(family_wav("heart"))
    assert prediction.tasks == {} and prediction.sound_type is not None
    assert (prediction.sound_type.value, prediction.sound_type.source) == (None, "model")
    assert {s.reason for s in prediction.skipped} == {"sound_type_uncertain", "demographic_not_requested"}
    assert [n.code for n in prediction.notices] == ["sound_type_uncertain"]
    # Not even a confident-looking not_auscultation is refused when it is below min_probability.
    assert pipeline.predict(family_wav("not_auscultation")).tasks == {}
    stated = pipeline.predict(family_wav("heart"), context=ClientContext(sound_type="heart"))
    assert list(stated.tasks) == RUNS["heart"]


def _with_type_thresholds(gated: Path, folder: Path, **thresholds: float) -> Path:
    bundle = Path(shutil.copytree(gated, folder))
    manifest = read_manifest(bundle)
    assert manifest.out_of_distribution is not None
    spec = manifest.out_of_distribution
    changed = spec.model_copy(update={"sound_type_thresholds": spec.sound_type_thresholds | thresholds})
    write_manifest(bundle, manifest.model_copy(update={"out_of_distribution": changed, "files": {}}))
    return bundle


def test_an_upload_unlike_the_training_recordings_of_its_model_type_gets_no_answer_on_the_guess(
    gated: Path, tmp_path: Path
) -> None:
    """The classifier names a type, the upload is near the training recordings as a whole, but far from
    those of that type (here: a heart threshold no upload passes): no probe runs on the model's guess,
    the check says why, and a client that states the type gets its probes."""
    pipeline = InferencePipeline.from_bundle(
        _with_type_thresholds(gated, tmp_path / "strict", heart=-1.0), provider="cpu"
    )
    prediction = pipeline.predict(family_wav("heart"))
    assert prediction.out_of_distribution is not None and prediction.out_of_distribution.flagged is False
    check = prediction.sound_type_check
    assert check is not None and check.flagged and check.threshold == -1.0
    assert prediction.sound_type is not None and prediction.tasks == {}
    assert (prediction.sound_type.value, prediction.sound_type.reason) == (None, "sound_type_uncertain")
    (notice,) = prediction.notices
    assert notice.code == "sound_type_uncertain" and "training heart recordings" in notice.message
    response = predict_response(pipeline.manifest, prediction).model_dump(mode="json", exclude_none=True)
    assert (
        response["sound_type"]["model"]["check"]["flagged"] is True and "value" not in response["sound_type"]
    )
    stated = pipeline.predict(family_wav("heart"), context=ClientContext(sound_type="heart"))
    assert list(stated.tasks) == RUNS["heart"]
    # Another type's check is untouched: a lung tone is still gated on the model's answer.
    assert list(pipeline.predict(family_wav("lung")).tasks) == RUNS["lung"]


def test_a_bundle_without_type_thresholds_answers_without_the_check(gated: Path, tmp_path: Path) -> None:
    """Bundles exported before the check: no per-type thresholds, no row types; the gate works as before."""
    bundle = Path(shutil.copytree(gated, tmp_path / "older"))
    with np.load(bundle / "ood_reference.npz") as stored:
        kept = {k: stored[k] for k in stored.files if k != "row_sound_types"}
    np.savez(bundle / "ood_reference.npz", **kept)
    manifest = read_manifest(bundle)
    assert manifest.out_of_distribution is not None
    spec = manifest.out_of_distribution.model_copy(update={"sound_type_thresholds": {}})
    write_manifest(bundle, manifest.model_copy(update={"out_of_distribution": spec, "files": {}}))
    prediction = InferencePipeline.from_bundle(bundle, provider="cpu").predict(family_wav("lung"))
    assert prediction.sound_type_check is None and list(prediction.tasks) == RUNS["lung"]


def test_a_version_1_bundle_still_serves_every_probe_with_domain_unknown_warnings(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "v1"))
    downgrade_to_v1(bundle)
    assert json.loads((bundle / "manifest.json").read_text())["schema_version"] == 1
    with serve(bundle, tmp_path) as live:
        body = httpx.post(f"{live.url}/predict", files={"file": ("a.wav", wav_bytes(3.0))}, timeout=30).json()
        info = httpx.get(f"{live.url}/v1/model").json()
    assert set(body["tasks"]) == {"sound", "disease", "age"} and body["skipped"] == []
    assert body["sound_type"] == {"source": "none"}  # no classifier, nothing stated: value and model absent
    assert "out_of_distribution" not in body
    assert _codes(body) == [
        ("sound_type_unknown", None),
        ("domain_unknown", "sound"),
        ("domain_unknown", "disease"),
        ("domain_unknown", "age"),
    ]
    assert all(result.get("calibrated", False) is False for result in body["tasks"].values())
    assert info["schema_version"] == 1 and info["sound_type"] is None and info["out_of_distribution"] is None
    assert all(p["domain"]["sound_types"] == [] for p in info["probes"])


# --- bundles that break the new contracts are refused by file ----------------------------------------------
def _rewrite(bundle: Path, file: str, **arrays: np.ndarray) -> None:
    with np.load(bundle / file) as stored:
        data = {key: stored[key] for key in stored.files} | arrays
    np.savez(bundle / file, **data)
    write_manifest(bundle, read_manifest(bundle).model_copy(update={"files": {}}))


@pytest.mark.parametrize(
    ("file", "arrays", "message"),
    [
        ("probe_murmur.npz", {"temperature": np.array([0.0])}, "positive"),
        ("probe_valve.npz", {"temperature": np.array([1.0, 2.0])}, "one per label"),
        ("probe_age.npz", {"temperature": np.array([2.0])}, "not a regression"),
        ("probe_murmur.npz", {"temperature": np.array([3.0])}, "differs from the manifest"),
        ("ood_reference.npz", {"reference": np.ones((32, 16), dtype=np.float32)}, "L2-normalised"),
        ("ood_reference.npz", {"projection": np.eye(8, dtype=np.float32)}, "do not fit"),
        ("ood_reference.npz", {"row_sound_types": np.zeros(32, dtype=np.float32)}, "row_sound_types"),
        ("ood_reference.npz", {"row_sound_types": np.array(["heart"] * 31)}, "row_sound_types"),
        ("ood_reference.npz", {"row_sound_types": np.array(["heart"] * 30 + ["lung"] * 2)}, "fewer than k"),
        ("ood_reference.npz", {"mean": np.array(["a"] * 8)}, "numeric"),
    ],
    ids=[
        "zero-temperature",
        "temperature-shape",
        "regression-temperature",
        "undocumented",
        "ood-norm",
        "ood-dim",
        "row-types-not-strings",
        "row-types-count",
        "too-few-rows-of-a-type",
        "ood-not-numeric",
    ],
)
def test_broken_calibration_or_reference_is_refused(
    gated: Path, tmp_path: Path, file: str, arrays: dict, message: str
) -> None:
    bundle = Path(shutil.copytree(gated, tmp_path / "broken"))
    _rewrite(bundle, file, **arrays)
    with pytest.raises(BundleError, match=message) as error:
        InferencePipeline.from_bundle(bundle, provider="cpu")
    assert error.value.file == file


def test_a_manifest_calibration_without_a_temperature_is_refused(gated: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(gated, tmp_path / "uncalibrated"))
    with np.load(bundle / "probe_murmur.npz") as stored:
        np.savez(bundle / "probe_murmur.npz", **{k: stored[k] for k in stored.files if k != "temperature"})
    write_manifest(bundle, read_manifest(bundle).model_copy(update={"files": {}}))
    with pytest.raises(BundleError, match="holds no temperature"):
        InferencePipeline.from_bundle(bundle, provider="cpu")


def test_sound_type_labels_must_be_sound_types(gated: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(gated, tmp_path / "labels"))
    manifest = read_manifest(bundle)
    assert manifest.sound_type is not None
    labels = ["heart", "lung", "cough", "breathing", "speech"]
    spec = manifest.sound_type.model_copy(update={"labels": labels})
    write_manifest(bundle, manifest.model_copy(update={"sound_type": spec, "files": {}}))
    with pytest.raises(BundleError, match="speech"):
        InferencePipeline.from_bundle(bundle, provider="cpu")
