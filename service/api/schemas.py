"""Response models (pydantic v2) with OpenAPI examples; also what ``acula predict --json`` prints.

The CLI builds the same models from the same :class:`~service.core.pipeline.Prediction`, so a client can
read the output of either the same way. ``/predict`` answers with :class:`PredictResponse`: the sound type
the probes were chosen for, the probes that apply (each saying whether its probabilities are calibrated),
the probes left out and why, and warnings with stable codes (see :mod:`acula.service.core.applicability`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from acula.service.bundle import Calibration, Manifest, ProbeDomain, ProbePurpose, SoundType
from acula.service.core.applicability import (
    SKIP_REASONS,
    WARNING_CODES,
    Notice,
    Skip,
    SoundTypeDecision,
    demographic_message,
    mismatch_message,
)
from acula.service.core.ood import OodResult
from acula.service.core.pipeline import Prediction, model_identity
from acula.service.core.probes import TaskOutput
from acula.service.index import ReportHit

EXAMPLE_DIGEST = "sha256:3b9f2c7d0e41a8c5f6b2d9e07a1c4f38b5d6e2a9c0f7b1d4e8a3c6f9b2e5d8a1"


class ModelRef(BaseModel):
    """Which model answered: store it beside any prediction or embedding kept, since another model (or
    another export under the same name and version) gives other numbers."""

    name: str = Field(examples=["acula-default"])
    version: str = Field(examples=["1.0.0"])
    digest: str | None = Field(
        None,
        description="'sha256:' + the SHA-256 of the bundle's manifest, which records the SHA-256 of every "
        "bundle file: equal digests, identical model.",
        examples=[EXAMPLE_DIGEST],
    )


class InputInfo(BaseModel):
    duration_s: float = Field(description="Duration of the decoded recording.", examples=[10.0])
    native_rate: int = Field(description="Sample rate of the upload, before resampling.", examples=[4000])
    sample_rate: int = Field(description="Rate the encoder saw.", examples=[16000])
    channels: int = Field(description="Channels in the upload (mixed down to mono).", examples=[1])
    format: str | None = Field(None, description="Container format detected.", examples=["WAV"])


class WindowInfo(BaseModel):
    count: int = Field(examples=[5])
    window_seconds: float = Field(examples=[4.0])
    hop_seconds: float = Field(examples=[2.0])
    pooling: str = Field(examples=["mean"])


def _purpose() -> Any:
    return Field(
        "diagnostic",
        description="diagnostic (a finding), quality (of the recording) or demographic (a benchmark task "
        "such as age or sex: returned only when named in tasks).",
    )


def _calibrated() -> Any:
    return Field(
        False,
        description="Whether the probabilities are temperature-scaled on held-out data (GET /v1/model gives "
        "the calibration figures); false: raw scores, not to be read as frequencies.",
    )


class ClassificationResult(BaseModel):
    kind: Literal["classification"] = "classification"
    purpose: ProbePurpose = _purpose()
    calibrated: bool = _calibrated()
    label: str = Field(description="Most probable class.", examples=["wheeze"])
    probabilities: dict[str, float] = Field(examples=[{"normal": 0.1, "crackle": 0.2, "wheeze": 0.7}])


class MultilabelResult(BaseModel):
    kind: Literal["multilabel"] = "multilabel"
    purpose: ProbePurpose = _purpose()
    calibrated: bool = _calibrated()
    labels: list[str] = Field(description="Labels at or above their threshold.", examples=[["MR"]])
    probabilities: dict[str, float] = Field(examples=[{"AS": 0.1, "MR": 0.8}])


class RegressionResult(BaseModel):
    kind: Literal["regression"] = "regression"
    purpose: ProbePurpose = _purpose()
    value: float = Field(examples=[42.5])
    unit: str | None = Field(None, examples=["years"])


TaskResult = Annotated[
    ClassificationResult | MultilabelResult | RegressionResult, Field(discriminator="kind")
]


class SoundTypeCheck(BaseModel):
    """How unlike the training recordings of the classifier's top sound type the upload is."""

    sound_type: SoundType = Field(examples=["heart"])
    score: float = Field(
        description="1 - mean cosine similarity to the k nearest training-side reference recordings of this "
        "sound type only.",
        examples=[0.31],
    )
    threshold: float = Field(
        description="That sound type's threshold: the manifest's quantile of held-out training-side "
        "recordings of the type.",
        examples=[0.46],
    )
    flagged: bool = Field(
        description="Unlike the training recordings of this type: the model's sound type was not used.",
        examples=[False],
    )


class SoundTypeModelView(BaseModel):
    """The sound-type classifier's own answer, whatever was used."""

    label: str = Field(examples=["heart"])
    probability: float = Field(examples=[0.94])
    probabilities: dict[str, float] = Field(
        examples=[{"heart": 0.94, "lung": 0.03, "cough": 0.01, "breathing": 0.01, "not_auscultation": 0.01}]
    )
    calibrated: bool = _calibrated()
    check: SoundTypeCheck | None = Field(
        None,
        description="The upload against the training recordings of the type in label; absent for "
        "not_auscultation and for bundles that predate the check.",
    )


class SoundTypeResult(BaseModel):
    """The sound type the probes were chosen for."""

    value: SoundType | None = Field(
        None,
        description="heart, lung, cough or breathing; absent when none could be used (then no probe with a "
        "known domain ran, and a warning says how to get answers: state sound_type).",
        examples=["heart"],
    )
    source: Literal["client", "model", "none"] = Field(
        description="client: stated in the request (it wins); model: the bundle's sound-type classifier; "
        "none: neither (a bundle without a classifier, and no sound_type stated).",
        examples=["model"],
    )
    probability: float | None = Field(
        None,
        description="The classifier's probability of value (absent without a classifier).",
        examples=[0.94],
    )
    model: SoundTypeModelView | None = Field(None, description="The classifier's answer; absent without one.")


class OutOfDistributionResult(BaseModel):
    score: float = Field(
        description="1 - mean cosine similarity to the k nearest training-side reference recordings.",
        examples=[0.18],
    )
    threshold: float = Field(description="Scores above this are flagged.", examples=[0.42])
    flagged: bool = Field(description="The recording is unlike the training recordings.", examples=[False])


class SkippedProbe(BaseModel):
    task: str = Field(examples=["sprsound-adventitious"])
    reason: str = Field(description=f"One of {', '.join(SKIP_REASONS)}.", examples=["sound_type_mismatch"])
    message: str = Field(
        examples=["sprsound-adventitious was trained on lung recordings; this upload is heart"]
    )


class WarningItem(BaseModel):
    code: str = Field(description=f"One of {', '.join(WARNING_CODES)}.", examples=["out_of_distribution"])
    message: str
    task: str | None = Field(None, description="The probe it concerns, if one.")
    reason: str | None = Field(None, description="not_applicable only: why the named probe may not apply.")


class WindowResult(BaseModel):
    index: int
    start_s: float
    end_s: float
    tasks: dict[str, TaskResult]


class ReportResult(BaseModel):
    id: str = Field(examples=["sprsound-train-0042"])
    score: float = Field(description="Inner product of L2-normalised joint embeddings.", examples=[0.83])
    dataset: str | None = Field(None, examples=["sprsound"])
    labels: dict[str, Any] = Field(default_factory=dict, examples=[{"record": "CAS"}])
    text: str | None = Field(
        None, description="Report text; null unless the bundle's corpus is de-identified.", examples=["..."]
    )


# --- OpenAPI examples (the default bundle's probes; the numbers are illustrative) ---------------------------
_MODEL_EXAMPLE = {"name": "acula-default", "version": "1.0.0", "digest": EXAMPLE_DIGEST}


def _mismatch(task: str, trained_on: str, upload: str, source: str) -> dict[str, str]:
    message = mismatch_message(task, trained_on.split(", "), upload, source)
    return {"task": task, "reason": "sound_type_mismatch", "message": message}


def _demographic(task: str) -> dict[str, str]:
    return {"task": task, "reason": "demographic_not_requested", "message": demographic_message(task)}


def _heard(label: str, score: float, threshold: float, **probabilities: float) -> dict[str, Any]:
    """The sound-type classifier's answer in an example, with its check against that type's recordings."""
    check = {"sound_type": label, "score": score, "threshold": threshold, "flagged": score > threshold}
    return {
        "label": label,
        "probability": probabilities[label],
        "probabilities": probabilities,
        "calibrated": True,
        "check": check,
    }


HEART_EXAMPLE: dict[str, Any] = {
    "model": _MODEL_EXAMPLE,
    "input": {"duration_s": 10.0, "native_rate": 2000, "sample_rate": 8000, "channels": 1, "format": "FLAC"},
    "windows": {"count": 3, "window_seconds": 4.0, "hop_seconds": 4.0, "pooling": "mean"},
    "sound_type": {
        "value": "heart",
        "source": "model",
        "probability": 0.94,
        "model": _heard(
            "heart", 0.31, 0.46, heart=0.94, lung=0.03, cough=0.01, breathing=0.01, not_auscultation=0.01
        ),
    },
    "out_of_distribution": {"score": 0.18, "threshold": 0.42, "flagged": False},
    "tasks": {
        "physionet-abnormal": {
            "kind": "classification",
            "purpose": "diagnostic",
            "calibrated": True,
            "label": "abnormal",
            "probabilities": {"normal": 0.31, "abnormal": 0.69},
        },
        "bmd-valve": {
            "kind": "multilabel",
            "purpose": "diagnostic",
            "calibrated": True,
            "labels": [],
            "probabilities": {"AS": 0.12, "AR": 0.08, "MR": 0.21, "MS": 0.05},
        },
    },
    "skipped": [
        _mismatch("sprsound-adventitious", "lung", "heart", "model"),
        _mismatch("sprsound-record4", "lung", "heart", "model"),
        _demographic("sprsound-age"),
        _demographic("coswara-sex"),
        _mismatch("sprsound-quality", "lung", "heart", "model"),
        _mismatch("coswara-quality", "cough, breathing", "heart", "model"),
    ],
    "warnings": [],
    "timings_ms": {"decode": 2.1, "queue": 0.4, "inference": 18.2, "probes": 0.3, "total": 22.0},
}

LUNG_EXAMPLE: dict[str, Any] = {
    "model": _MODEL_EXAMPLE,
    "input": {"duration_s": 14.2, "native_rate": 8000, "sample_rate": 8000, "channels": 1, "format": "WAV"},
    "windows": {"count": 4, "window_seconds": 4.0, "hop_seconds": 4.0, "pooling": "mean"},
    "sound_type": {
        "value": "lung",
        "source": "client",
        "probability": 0.88,
        "model": _heard(
            "lung", 0.38, 0.48, heart=0.02, lung=0.88, cough=0.01, breathing=0.08, not_auscultation=0.01
        ),
    },
    "out_of_distribution": {"score": 0.23, "threshold": 0.42, "flagged": False},
    "tasks": {
        "sprsound-adventitious": {
            "kind": "classification",
            "purpose": "diagnostic",
            "calibrated": True,
            "label": "adventitious",
            "probabilities": {"normal": 0.27, "adventitious": 0.73},
        },
        "sprsound-record4": {
            "kind": "classification",
            "purpose": "diagnostic",
            "calibrated": True,
            "label": "CAS",
            "probabilities": {"Normal": 0.24, "CAS": 0.52, "DAS": 0.15, "CAS & DAS": 0.09},
        },
        "sprsound-quality": {
            "kind": "classification",
            "purpose": "quality",
            "calibrated": True,
            "label": "poor quality",
            "probabilities": {"usable": 0.38, "poor quality": 0.62},
        },
    },
    "skipped": [
        _mismatch("physionet-abnormal", "heart", "lung", "client"),
        _mismatch("bmd-valve", "heart", "lung", "client"),
        _demographic("sprsound-age"),
        _demographic("coswara-sex"),
        _mismatch("coswara-quality", "cough, breathing", "lung", "client"),
    ],
    "warnings": [
        {
            "code": "poor_quality",
            "task": "sprsound-quality",
            "message": "sprsound-quality: the recording looks like one annotators marked 'poor quality' "
            "(probability 0.62): re-record if you can, and read the other answers with caution",
        }
    ],
    "reports": [
        {
            "id": "sprsound-train-0042",
            "score": 0.83,
            "dataset": "sprsound",
            "labels": {"record": "CAS"},
            "text": "Paediatric lung auscultation, posterior left: continuous adventitious sounds (wheeze).",
        }
    ],
    "timings_ms": {
        "decode": 1.6,
        "queue": 0.3,
        "inference": 24.0,
        "probes": 0.4,
        "search": 0.2,
        "total": 27.5,
    },
}

UNCERTAIN_EXAMPLE: dict[str, Any] = {
    "model": _MODEL_EXAMPLE,
    "input": {"duration_s": 6.0, "native_rate": 16000, "sample_rate": 8000, "channels": 1, "format": "FLAC"},
    "windows": {"count": 2, "window_seconds": 4.0, "hop_seconds": 4.0, "pooling": "mean"},
    "sound_type": {
        "source": "model",
        "model": _heard(
            "lung", 0.44, 0.48, heart=0.05, lung=0.41, cough=0.1, breathing=0.37, not_auscultation=0.07
        ),
    },
    "out_of_distribution": {"score": 0.35, "threshold": 0.42, "flagged": False},
    "tasks": {},
    "skipped": [
        {
            "task": "physionet-abnormal",
            "reason": "sound_type_uncertain",
            "message": "the upload's sound type is not known; physionet-abnormal is for heart recordings",
        },
        _demographic("coswara-sex"),
    ],
    "warnings": [
        {
            "code": "sound_type_uncertain",
            "message": "the model cannot tell the sound type (best guess 'lung', probability 0.41, below "
            "0.50): state sound_type (heart, lung, cough or breathing) to get the probes that apply",
        }
    ],
    "timings_ms": {"decode": 1.1, "queue": 0.2, "inference": 12.0, "probes": 0.2, "total": 14.1},
}

NOT_AUSCULTATION_EXAMPLE: dict[str, Any] = {
    "type": "urn:acula:problem:not_auscultation",
    "title": "Not an auscultation recording",
    "status": 422,
    "detail": "the model hears no heart, lung, cough or breathing sound in this upload (not_auscultation, "
    "probability 0.97); if it is one, state sound_type",
    "instance": "4f1c2a9e0b7d4e3f8a6c5b2d1e0f9a8b",
    "code": "not_auscultation",
    "probability": 0.97,
    "probabilities": {"heart": 0.0, "lung": 0.01, "cough": 0.01, "breathing": 0.01, "not_auscultation": 0.97},
    "model": _MODEL_EXAMPLE,
}
PREDICT_EXAMPLES = {"heart": HEART_EXAMPLE, "lung": LUNG_EXAMPLE, "uncertain": UNCERTAIN_EXAMPLE}
PREDICT_EXAMPLE = HEART_EXAMPLE


class PredictResponse(BaseModel):
    """One recording's answer: only the probes that apply to its sound type, the others under skipped."""

    model_config = ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [HEART_EXAMPLE]})

    model: ModelRef
    input: InputInfo
    windows: WindowInfo
    sound_type: SoundTypeResult
    out_of_distribution: OutOfDistributionResult | None = Field(
        None, description="Absent when the bundle has no out-of-distribution reference."
    )
    tasks: dict[str, TaskResult] = Field(description="The probes that ran: those that apply, or those named.")
    skipped: list[SkippedProbe] = Field(
        default_factory=list, description="Every other probe of the bundle, with the reason it did not run."
    )
    warnings: list[WarningItem] = Field(default_factory=list)
    window_scores: list[WindowResult] | None = Field(None, description="Per-window task outputs, if asked.")
    reports: list[ReportResult] | None = Field(None, description="Closest reports, if top_k > 0.")
    timings_ms: dict[str, float] = Field(
        default_factory=dict, examples=[{"decode": 1.2, "queue": 0.4, "inference": 3.1, "total": 6.0}]
    )


class EmbedResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: ModelRef
    input: InputInfo
    windows: WindowInfo
    embedding: list[float] = Field(description="Window embeddings pooled over the recording (probe input).")
    joint: list[float] = Field(description="L2-normalised joint-space embedding (report retrieval).")
    timings_ms: dict[str, float] = Field(default_factory=dict)


class SimilarReportsResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: ModelRef
    query: Literal["audio", "text"]
    deidentified: bool = Field(description="Whether texts are shown (only for a de-identified corpus).")
    reports: list[ReportResult]
    timings_ms: dict[str, float] = Field(default_factory=dict)


class ProbeInfo(BaseModel):
    task: str
    kind: str
    labels: list[str]
    unit: str | None
    metrics: dict[str, float]
    description: str
    purpose: ProbePurpose
    domain: ProbeDomain = Field(
        description="The recordings it was trained on: /predict runs it only for uploads of these sound "
        "types (and population, when the client states an age group). Empty sound_types: unknown "
        "(version-1 bundle)."
    )
    calibrated: bool = _calibrated()
    calibration: Calibration | None = Field(
        None, description="How it was calibrated, and the ECE before/after."
    )


class SoundTypeInfo(BaseModel):
    labels: list[str] = Field(examples=[["heart", "lung", "cough", "breathing", "not_auscultation"]])
    min_probability: float = Field(description="Below this the model's sound type is not used.")
    metrics: dict[str, float] = Field(description="Held-out metrics, e.g. accuracy.")
    confusion: list[list[int]] = Field(description="Held-out confusion matrix: rows true, columns predicted.")
    confusion_source: str
    calibrated: bool = _calibrated()
    calibration: Calibration | None = None


class OutOfDistributionInfo(BaseModel):
    k: int
    threshold: float
    quantile: float = Field(description="Quantile of held-out training-side scores the threshold sits at.")
    reference_count: int
    flag_rates: dict[str, float] = Field(description="Share flagged per held-out set.")
    sound_type_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Per sound type: above this score against that type's training recordings, the model's "
        "sound type is not used. Empty: the bundle predates the check.",
    )


class LimitsInfo(BaseModel):
    max_upload_bytes: int
    max_audio_seconds: float
    min_audio_seconds: float
    max_batch_size: int
    max_wait_ms: float
    max_inference_requests: int
    max_top_k: int


class ModelInfoResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: ModelRef
    name: str
    version: str
    description: str
    schema_version: int = Field(description="Bundle manifest schema (1: probe domains unknown).")
    audio: dict[str, Any]
    embedding_dim: int | str
    joint_dim: int | str
    probes: list[ProbeInfo]
    sound_type: SoundTypeInfo | None = Field(None, description="Null: only a client-stated sound type gates.")
    out_of_distribution: OutOfDistributionInfo | None
    report_index: dict[str, Any] | None
    text_side: bool
    execution_providers: list[str] = Field(description="Providers the ONNX session really uses, best first.")
    threads: dict[str, int]
    limits: LimitsInfo
    provenance: dict[str, Any]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


# --- conversions from the core's dataclasses --------------------------------------------------------------
def model_ref(manifest: Manifest) -> ModelRef:
    return ModelRef.model_validate(model_identity(manifest))


def task_result(output: TaskOutput) -> ClassificationResult | MultilabelResult | RegressionResult:
    purpose, calibrated = output.purpose, output.calibrated
    if output.kind == "classification":
        return ClassificationResult.model_validate(
            {
                "purpose": purpose,
                "calibrated": calibrated,
                "label": output.label or "",
                "probabilities": output.probabilities,
            }
        )
    if output.kind == "multilabel":
        return MultilabelResult.model_validate(
            {
                "purpose": purpose,
                "calibrated": calibrated,
                "labels": output.positive,
                "probabilities": output.probabilities,
            }
        )
    return RegressionResult.model_validate({"purpose": purpose, "value": output.value, "unit": output.unit})


def sound_type_result(decision: SoundTypeDecision, check: OodResult | None = None) -> SoundTypeResult:
    model = decision.model
    view = None
    if model is not None and model.label is not None:
        view = SoundTypeModelView(
            label=model.label,
            probability=model.probabilities[model.label],
            probabilities=model.probabilities,
            calibrated=model.calibrated,
            check=None
            if check is None
            else SoundTypeCheck.model_validate(
                {
                    "sound_type": model.label,
                    "score": check.score,
                    "threshold": check.threshold,
                    "flagged": check.flagged,
                }
            ),
        )
    return SoundTypeResult(
        value=decision.value, source=decision.source, probability=decision.probability, model=view
    )


def ood_result(result: OodResult) -> OutOfDistributionResult:
    return OutOfDistributionResult(score=result.score, threshold=result.threshold, flagged=result.flagged)


def skipped_probe(skip: Skip) -> SkippedProbe:
    return SkippedProbe(task=skip.task, reason=skip.reason, message=skip.message)


def warning_item(notice: Notice) -> WarningItem:
    return WarningItem(code=notice.code, message=notice.message, task=notice.task, reason=notice.reason)


def report_result(hit: ReportHit) -> ReportResult:
    return ReportResult(id=hit.id, score=hit.score, dataset=hit.dataset, labels=hit.labels, text=hit.text)


def _common(manifest: Manifest, prediction: Prediction) -> dict[str, Any]:
    audio, contract = prediction.audio, manifest.audio
    return {
        "model": model_ref(manifest),
        "input": InputInfo(
            duration_s=audio.duration_s,
            native_rate=audio.native_rate,
            sample_rate=contract.sample_rate,
            channels=audio.channels,
            format=audio.format,
        ),
        "windows": WindowInfo(
            count=prediction.window_count,
            window_seconds=contract.window_seconds,
            hop_seconds=contract.hop_seconds,
            pooling=contract.pooling,
        ),
        "timings_ms": prediction.timings_ms,
    }


def predict_response(manifest: Manifest, prediction: Prediction) -> PredictResponse:
    if prediction.sound_type is None:
        raise ValueError("a prediction made without a probe request has no /predict answer")
    windows = None
    if prediction.windows is not None:
        windows = [
            WindowResult(
                index=w.index,
                start_s=w.start_s,
                end_s=w.end_s,
                tasks={name: task_result(out) for name, out in w.tasks.items()},
            )
            for w in prediction.windows
        ]
    ood = prediction.out_of_distribution
    return PredictResponse(
        **_common(manifest, prediction),
        sound_type=sound_type_result(prediction.sound_type, prediction.sound_type_check),
        out_of_distribution=None if ood is None else ood_result(ood),
        tasks={name: task_result(out) for name, out in prediction.tasks.items()},
        skipped=[skipped_probe(skip) for skip in prediction.skipped],
        warnings=[warning_item(notice) for notice in prediction.notices],
        window_scores=windows,
        reports=None if prediction.reports is None else [report_result(hit) for hit in prediction.reports],
    )


def similar_reports_response(
    manifest: Manifest, query: Literal["audio", "text"], hits: list[ReportHit], timings_ms: dict[str, float]
) -> SimilarReportsResponse:
    index = manifest.report_index
    return SimilarReportsResponse(
        model=model_ref(manifest),
        query=query,
        deidentified=index is not None and index.deidentified,
        reports=[report_result(hit) for hit in hits],
        timings_ms=timings_ms,
    )


def embed_response(manifest: Manifest, prediction: Prediction) -> EmbedResponse:
    return EmbedResponse(
        **_common(manifest, prediction),
        embedding=[float(x) for x in prediction.embedding],
        joint=[float(x) for x in prediction.joint],
    )


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    type: str = Field(examples=["urn:acula:problem:unsupported_codec"])
    title: str = Field(examples=["Unsupported audio codec"])
    status: int = Field(examples=[415])
    detail: str = Field(examples=["the upload is not a WAV, FLAC or OGG file"])
    instance: str = Field(description="The request id (also in X-Request-ID).", examples=["4f1c2a..."])
    code: str = Field(examples=["unsupported_codec"])


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json errors."""
    return {
        status: {
            "model": Problem,
            "content": {"application/problem+json": {}},
            "description": "Problem details",
        }
        for status in statuses
    }
