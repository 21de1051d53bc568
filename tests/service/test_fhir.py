"""``Accept: application/fhir+json``: /predict as a FHIR R4B Bundle, parsed back with ``fhir.resources`` from
the live service's response (a Device for the model, an AI-asserted Observation per answer, the warnings and
skipped probes in an OperationOutcome, no patient invented)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from acula.service.api.predict import _fhir_example
from acula.service.fhir import wants_fhir
from tests.support.bundles import TinyBundleOptions, build_tiny_bundle, family_wav
from tests.support.server import LiveServer, serve

AIAST = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "AIAST")
FHIR = {"Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    bundle = tmp_path_factory.mktemp("fhir") / "bundle"
    build_tiny_bundle(bundle, TinyBundleOptions(gated=True, name="acula-gated"))
    with serve(bundle, tmp_path_factory.mktemp("fhir-server")) as live:
        yield live


def _predict(
    server: LiveServer, sound: str, headers: dict[str, str] | None = None, **params: str
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/predict",
        params=params,
        files={"file": ("a.wav", family_wav(sound))},
        headers=headers,
        timeout=30.0,
    )


def _fhir(server: LiveServer, sound: str, **params: str) -> tuple[Bundle, dict]:
    """The FHIR answer, validated by fhir.resources, and the plain JSON answer to the same request."""
    response = _predict(server, sound, FHIR, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    assert response.headers["vary"] == "Accept"
    return Bundle.model_validate_json(response.text), _predict(server, sound, **params).json()


def _resources(bundle: Bundle, kind: str) -> list:
    return [entry.resource for entry in bundle.entry if entry.resource.get_resource_type() == kind]


def _security(resource) -> set[tuple[str, str]]:
    return {(coding.system, coding.code) for coding in resource.meta.security}


@pytest.mark.parametrize(
    ("accept", "fhir"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("application/fhir+json", True),
        ("application/json+fhir", True),
        ("application/fhir+json; fhirVersion=4.3", True),
        ("application/fhir+json, application/json", True),
        ("application/fhir+json;q=0.5, application/json", False),
        ("application/json;q=0.2, application/fhir+json;q=0.9", True),
        ("application/fhir+json;q=0", False),
        ("application/fhir+json;q=oops", False),
        ("text/html", False),
    ],
)
def test_content_negotiation(accept: str | None, fhir: bool) -> None:
    assert wants_fhir(accept) is fhir


def test_a_heart_answer_as_a_fhir_bundle(server: LiveServer) -> None:
    bundle, answer = _fhir(server, "heart")
    assert bundle.type == "collection" and bundle.timestamp is not None
    (device,) = _resources(bundle, "Device")
    assert bundle.entry[0].resource is device
    assert [(i.system, i.value) for i in device.identifier] == [
        ("urn:acula:bundle-digest", answer["model"]["digest"])
    ]
    assert (
        device.deviceName[0].name == "acula-gated" and device.version[0].value == answer["model"]["version"]
    )
    device_url = bundle.entry[0].fullUrl

    observations = {o.code.coding[0].code: o for o in _resources(bundle, "Observation")}
    assert list(observations) == ["sound-type", *answer["tasks"]]
    for code, observation in observations.items():
        assert observation.status == "preliminary" and AIAST in _security(observation), code
        assert observation.code.coding[0].system == "urn:acula:probe"
        assert observation.device.reference == device_url
        assert observation.subject is None and observation.encounter is None and observation.performer is None

    murmur, expected = observations["murmur"], answer["tasks"]["murmur"]
    assert murmur.valueCodeableConcept.coding[0].code == expected["label"]
    probabilities = {c.code.coding[0].code: float(c.valueQuantity.value) for c in murmur.component}
    assert probabilities == pytest.approx(expected["probabilities"])
    assert murmur.interpretation[0].coding[0].code == ("N" if expected["label"] == "normal" else "A")
    assert "calibrated (temperature and shift)" in murmur.method.text
    assert murmur.category[0].coding[0].code == "exam"

    valve, expected = observations["valve"], answer["tasks"]["valve"]
    assert valve.valueCodeableConcept is None and len(valve.component) == len(expected["probabilities"])
    for component in valve.component:
        label = component.code.coding[0].code
        assert float(component.valueQuantity.value) == pytest.approx(expected["probabilities"][label])
        assert component.interpretation[0].coding[0].code == ("POS" if label in expected["labels"] else "NEG")
    assert "not calibrated" in valve.method.text

    quality = observations["heart-quality"]  # its poor_quality warning travels with it
    assert quality.category is None and "poor quality" in quality.note[0].text
    heard = observations["sound-type"]
    assert (
        heard.valueCodeableConcept.coding[0].code == "heart"
        and "heart (from the model)" in heard.note[0].text
    )

    (outcome,) = _resources(bundle, "OperationOutcome")
    issues = [(i.severity, i.details.coding[0].system, i.details.coding[0].code) for i in outcome.issue]
    assert ("warning", "urn:acula:warning", "poor_quality") in issues
    skipped = [
        (code, i.diagnostics)
        for (_, system, code), i in zip(issues, outcome.issue, strict=True)
        if system == "urn:acula:skip-reason"
    ]
    assert skipped == [(s["reason"], f"task {s['task']}") for s in answer["skipped"]]


def test_a_regression_answer_is_a_quantity_in_ucum(server: LiveServer) -> None:
    bundle, answer = _fhir(server, "lung", tasks="age")
    (age,) = [o for o in _resources(bundle, "Observation") if o.code.coding[0].code == "age"]
    quantity = age.valueQuantity
    assert float(quantity.value) == pytest.approx(answer["tasks"]["age"]["value"])
    assert (quantity.unit, quantity.system, quantity.code) == ("years", "http://unitsofmeasure.org", "a")
    assert age.category is None  # demographic: not an examination finding
    assert age.note is None  # it applies to a lung recording: nothing to caution


def test_errors_stay_problem_json_and_plain_accept_gets_json(server: LiveServer) -> None:
    refused = _predict(server, "not_auscultation", FHIR)
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    plain = _predict(server, "heart", {"Accept": "*/*"})
    assert plain.headers["content-type"] == "application/json" and "sound_type" in plain.json()


def test_the_openapi_example_is_a_valid_fhir_bundle() -> None:
    bundle = Bundle.model_validate(_fhir_example())
    kinds = [entry.resource.get_resource_type() for entry in bundle.entry]
    assert kinds[0] == "Device" and kinds[-1] == "OperationOutcome" and "Observation" in kinds


def test_no_patient_or_subject_anywhere(server: LiveServer) -> None:
    response = _predict(server, "lung", FHIR, tasks="age,sound")
    text = response.text
    for field in ('"subject"', '"patient"', '"Patient"', '"encounter"', '"performer"'):
        assert field not in text, field


def test_the_readme_example_is_what_the_service_sends(server: LiveServer) -> None:
    """The README shows a FHIR answer: the same resource types and codes as a live one."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for needed in ("application/fhir+json", "urn:acula:bundle-digest", "AIAST", "OperationOutcome"):
        assert needed in readme, needed
