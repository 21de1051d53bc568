"""``/predict`` as a FHIR Bundle, for hospital integration engines (``Accept: application/fhir+json``).

Built from the same :class:`~acula.service.api.schemas.PredictResponse` as the JSON answer, so the two cannot
disagree, and validated with ``fhir.resources`` (FHIR R4B, 4.3.0: its Bundle, Device, Observation and
OperationOutcome are the R4 ones field for field; ``fhir.resources`` 8 ships R4B and R5, not 4.0.1) before it
is sent, so an invalid resource is a bug caught here, never a message a hospital engine rejects.

What the Bundle (type ``collection``) holds:

- a **Device** for the model: name and version, and the bundle digest as an identifier
  (``urn:acula:bundle-digest``), so a stored Observation says exactly which model asserted it;
- an **Observation** per probe result returned (status ``preliminary``; code ``urn:acula:probe`` + task
  name; the label as ``valueCodeableConcept`` with one probability ``component`` per class, per-label
  components with POS/NEG for multilabel probes, ``valueQuantity`` for regression; N/A interpretation only
  for binary probes whose negative class is "normal"; the probe's warnings as notes), and one for the
  sound-type classifier's own answer;
- an **OperationOutcome** with the response's warnings and the probes left out, when there are any.

Every Observation carries the AI Transparency on FHIR marking: ``meta.security`` code ``AIAST``
("Artificial Intelligence asserted", ``v3-ObservationValue``) and a ``device`` reference to the model. No
subject, patient, encounter or performer is invented: the service is not told who was recorded, and the
integrating system links the Observations to its own patient.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from acula.service.api.schemas import ClassificationResult, ModelRef, PredictResponse, TaskResult

FHIR_JSON = "application/fhir+json"
# DSTU2's name for the same thing, still sent by some engines.
FHIR_JSON_TYPES = (FHIR_JSON, "application/json+fhir")
FHIR_VERSION = "4.3.0"  # R4B

AI_ASSERTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
PROBE_SYSTEM = "urn:acula:probe"
DIGEST_SYSTEM = "urn:acula:bundle-digest"
WARNING_SYSTEM = "urn:acula:warning"
SKIP_SYSTEM = "urn:acula:skip-reason"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_UCUM = "http://unitsofmeasure.org"
_UCUM_UNITS = {"years": "a", "year": "a", "months": "mo", "days": "d", "bpm": "/min", "seconds": "s"}


def wants_fhir(accept: str | None) -> bool:
    """Whether an ``Accept`` header prefers FHIR JSON to plain JSON (by q-value; a tie goes to FHIR, since
    no client names ``application/fhir+json`` by accident). ``*/*`` or no header: plain JSON."""
    fhir_q = json_q = 0.0
    for part in (accept or "").split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in FHIR_JSON_TYPES:
            fhir_q = max(fhir_q, q)
        elif media in ("application/json", "application/*", "*/*"):
            json_q = max(json_q, q)
    return fhir_q > 0 and fhir_q >= json_q


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code} | ({"display": display} if display else {})


def _probability(task: str, label: str, p: float) -> dict[str, Any]:
    return {
        "code": {"coding": [_coding(f"{PROBE_SYSTEM}:{task}", label)], "text": f"probability of {label}"},
        "valueQuantity": {"value": p, "unit": "probability", "system": _UCUM, "code": "1"},
    }


def _value(task: str, result: TaskResult) -> dict[str, Any]:
    """The Observation's value, components and interpretation for one probe result."""
    if result.kind == "regression":
        quantity: dict[str, Any] = {"value": result.value}
        if result.unit:
            quantity["unit"] = result.unit
            if result.unit in _UCUM_UNITS:
                quantity |= {"system": _UCUM, "code": _UCUM_UNITS[result.unit]}
        return {"valueQuantity": quantity}
    labels = list(result.probabilities)
    if result.kind == "multilabel":
        components = []
        for label, p in result.probabilities.items():
            positive = label in result.labels
            flag = _coding(_INTERPRETATION, *(("POS", "Positive") if positive else ("NEG", "Negative")))
            components.append(_probability(task, label, p) | {"interpretation": [{"coding": [flag]}]})
        return {"component": components}
    fields: dict[str, Any] = {
        "valueCodeableConcept": {
            "coding": [_coding(f"{PROBE_SYSTEM}:{task}", result.label)],
            "text": result.label,
        },
        "component": [_probability(task, label, p) for label, p in result.probabilities.items()],
    }
    if len(labels) == 2 and labels[0].lower() == "normal":  # (negative, positive) with a "normal" negative
        normal = result.label == labels[0]
        code = _coding(_INTERPRETATION, *(("N", "Normal") if normal else ("A", "Abnormal")))
        fields["interpretation"] = [{"coding": [code]}]
    return fields


def _observation(
    task: str,
    result: TaskResult,
    device_url: str,
    model: ModelRef,
    issued: str,
    notes: list[str],
) -> dict[str, Any]:
    method = "linear probe on the acula audio embedding"
    if result.kind != "regression":
        calibration = "calibrated (temperature and shift)" if result.calibrated else "not calibrated"
        method += f"; probabilities {calibration}"
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"security": [AI_ASSERTED]},
        "status": "preliminary",
        "code": {"coding": [_coding(PROBE_SYSTEM, task)], "text": task},
        "issued": issued,
        "device": {"reference": device_url, "display": f"{model.name} {model.version}"},
        "method": {"text": method},
        **_value(task, result),
    }
    if result.purpose == "diagnostic":
        observation["category"] = [{"coding": [_coding(_CATEGORY, "exam", "Exam")]}]
    if notes:
        observation["note"] = [{"text": note} for note in notes]
    return observation


def _device(model: ModelRef) -> dict[str, Any]:
    device: dict[str, Any] = {
        "resourceType": "Device",
        "status": "active",
        "deviceName": [{"name": model.name, "type": "model-name"}],
        "version": [{"value": model.version}],
        "type": {"text": "AI model: auscultation audio encoder with linear probes (acula)"},
    }
    if model.digest:
        device["identifier"] = [{"system": DIGEST_SYSTEM, "value": model.digest}]
    return device


def _outcome(response: PredictResponse) -> dict[str, Any] | None:
    issues = [
        {
            "severity": "warning",
            "code": "informational",
            "details": {"coding": [_coding(WARNING_SYSTEM, w.code)], "text": w.message},
        }
        | ({"diagnostics": f"task {w.task}"} if w.task else {})
        for w in response.warnings
    ]
    issues += [
        {
            "severity": "information",
            "code": "informational",
            "details": {"coding": [_coding(SKIP_SYSTEM, s.reason)], "text": s.message},
            "diagnostics": f"task {s.task}",
        }
        for s in response.skipped
    ]
    return {"resourceType": "OperationOutcome", "issue": issues} if issues else None


def fhir_bundle(
    response: PredictResponse,
    issued: datetime | None = None,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> str:
    """The FHIR R4B Bundle JSON for one ``/predict`` answer, validated with ``fhir.resources``.

    ``issued`` (default now, UTC) and ``new_id`` (default random UUIDs) are parameters so that a test or an
    OpenAPI example can be reproducible; the Device's id is derived from the model digest, so every answer
    of one model names the same Device.
    """
    from fhir.resources.R4B.bundle import Bundle

    stamp = (issued or datetime.now(UTC)).isoformat(timespec="milliseconds")
    model = response.model
    device_key = model.digest or f"{model.name}/{model.version}"
    device_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{DIGEST_SYSTEM}:{device_key}')}"
    entries: list[tuple[str, dict[str, Any]]] = [(device_url, _device(model))]
    decided, heard = response.sound_type, response.sound_type.model
    if heard is not None:  # the classifier's answer: AI-asserted like the probes', and it chose them
        classifier = ClassificationResult(
            purpose="quality",  # not a finding about the patient: no "exam" category
            calibrated=heard.calibrated,
            label=heard.label,
            probabilities=heard.probabilities,
        )
        note = (
            f"sound type used to choose the probes: {decided.value} (from the {decided.source})"
            if decided.value
            else "no sound type could be used to choose the probes"
        )
        observation = _observation("sound-type", classifier, device_url, model, stamp, [note])
        entries.append((f"urn:uuid:{new_id()}", observation))
    by_task: dict[str, list[str]] = {}
    shared = [w.message for w in response.warnings if w.task is None]
    for warning in response.warnings:
        if warning.task is not None:
            by_task.setdefault(warning.task, []).append(warning.message)
    for task, result in response.tasks.items():
        notes = by_task.get(task, []) + shared
        entries.append((f"urn:uuid:{new_id()}", _observation(task, result, device_url, model, stamp, notes)))
    outcome = _outcome(response)
    if outcome is not None:
        entries.append((f"urn:uuid:{new_id()}", outcome))
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": stamp,
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries],
    }
    return Bundle.model_validate(bundle).model_dump_json()
