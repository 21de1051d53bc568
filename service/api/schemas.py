"""Response models (pydantic v2) with OpenAPI examples; also what ``acula predict --json`` prints.

The CLI builds the same models from the same :class:`~service.core.pipeline.Prediction`, so a client can
read the output of either the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from acula.service.bundle import Manifest
from acula.service.core.pipeline import Prediction
from acula.service.core.probes import TaskOutput
from acula.service.index import ReportHit


class ModelRef(BaseModel):
    name: str = Field(examples=["acula-default"])
    version: str = Field(examples=["1.0.0"])


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


class ClassificationResult(BaseModel):
    kind: Literal["classification"] = "classification"
    label: str = Field(description="Most probable class.", examples=["wheeze"])
    probabilities: dict[str, float] = Field(examples=[{"normal": 0.1, "crackle": 0.2, "wheeze": 0.7}])


class MultilabelResult(BaseModel):
    kind: Literal["multilabel"] = "multilabel"
    labels: list[str] = Field(description="Labels at or above their threshold.", examples=[["MR"]])
    probabilities: dict[str, float] = Field(examples=[{"AS": 0.1, "MR": 0.8}])


class RegressionResult(BaseModel):
    kind: Literal["regression"] = "regression"
    value: float = Field(examples=[42.5])
    unit: str | None = Field(None, examples=["years"])


TaskResult = Annotated[
    ClassificationResult | MultilabelResult | RegressionResult, Field(discriminator="kind")
]


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


PREDICT_EXAMPLE: dict[str, Any] = {
    "model": {"name": "acula-default", "version": "1.0.0"},
    "input": {"duration_s": 10.0, "native_rate": 4000, "sample_rate": 16000, "channels": 1, "format": "WAV"},
    "windows": {"count": 4, "window_seconds": 4.0, "hop_seconds": 2.0, "pooling": "mean"},
    "tasks": {
        "sprsound_record": {
            "kind": "classification",
            "label": "CAS",
            "probabilities": {"Normal": 0.12, "CAS": 0.71, "DAS": 0.1, "CAS & DAS": 0.07},
        },
        "bmd_hs_disease": {"kind": "multilabel", "labels": ["MR"], "probabilities": {"AS": 0.08, "MR": 0.77}},
        "coswara_age": {"kind": "regression", "value": 41.3, "unit": "years"},
    },
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
        "decode": 2.1,
        "queue": 0.4,
        "inference": 18.2,
        "probes": 0.3,
        "search": 0.2,
        "total": 22.0,
    },
}


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [PREDICT_EXAMPLE]})

    model: ModelRef
    input: InputInfo
    windows: WindowInfo
    tasks: dict[str, TaskResult]
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

    name: str
    version: str
    description: str
    audio: dict[str, Any]
    embedding_dim: int | str
    joint_dim: int | str
    probes: list[ProbeInfo]
    report_index: dict[str, Any] | None
    text_side: bool
    execution_providers: list[str] = Field(description="Providers the ONNX session really uses, best first.")
    threads: dict[str, int]
    limits: LimitsInfo
    provenance: dict[str, Any]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


# --- conversions from the core's dataclasses --------------------------------------------------------------
def task_result(output: TaskOutput) -> ClassificationResult | MultilabelResult | RegressionResult:
    if output.kind == "classification":
        return ClassificationResult(label=output.label or "", probabilities=output.probabilities)
    if output.kind == "multilabel":
        return MultilabelResult(labels=output.positive, probabilities=output.probabilities)
    return RegressionResult(value=output.value or 0.0, unit=output.unit)


def report_result(hit: ReportHit) -> ReportResult:
    return ReportResult(id=hit.id, score=hit.score, dataset=hit.dataset, labels=hit.labels, text=hit.text)


def _common(manifest: Manifest, prediction: Prediction) -> dict[str, Any]:
    audio, contract = prediction.audio, manifest.audio
    return {
        "model": ModelRef(name=manifest.name, version=manifest.version),
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
    return PredictResponse(
        **_common(manifest, prediction),
        tasks={name: task_result(out) for name, out in prediction.tasks.items()},
        window_scores=windows,
        reports=None if prediction.reports is None else [report_result(hit) for hit in prediction.reports],
    )


def similar_reports_response(
    manifest: Manifest, query: Literal["audio", "text"], hits: list[ReportHit], timings_ms: dict[str, float]
) -> SimilarReportsResponse:
    index = manifest.report_index
    return SimilarReportsResponse(
        model=ModelRef(name=manifest.name, version=manifest.version),
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
