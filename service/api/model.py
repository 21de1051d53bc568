"""``GET /v1/model``: what is being served, on which execution provider, with which effective limits.

Also where a client learns what each probe's answer is worth before asking: its purpose, the recordings it
was trained on (its domain: /predict runs it only for those), whether its probabilities are calibrated and
how well, the sound-type classifier that gates the probes (labels, held-out confusion matrix) and the
out-of-distribution check.
"""

from __future__ import annotations

from fastapi import APIRouter

from acula.service.api.deps import RuntimeDep
from acula.service.api.schemas import (
    LimitsInfo,
    ModelInfoResponse,
    OutOfDistributionInfo,
    ProbeInfo,
    SoundTypeInfo,
    model_ref,
    problem_responses,
)

router = APIRouter(tags=["operations"])


@router.get("/v1/model", response_model=ModelInfoResponse, responses=problem_responses(401, 503))
async def model_info(runtime: RuntimeDep) -> ModelInfoResponse:
    pipeline, settings = runtime.pipeline, runtime.settings
    manifest = pipeline.manifest
    sound_type, ood = manifest.sound_type, manifest.out_of_distribution
    return ModelInfoResponse(
        model=model_ref(manifest),
        name=manifest.name,
        version=manifest.version,
        description=manifest.description,
        schema_version=manifest.schema_version,
        audio=manifest.audio.model_dump(),
        embedding_dim=manifest.encoder.embedding.shape[-1],
        joint_dim=manifest.encoder.joint.shape[-1],
        probes=[
            ProbeInfo(
                task=p.task,
                kind=p.kind,
                labels=p.labels,
                unit=p.unit,
                metrics=p.metrics,
                description=p.description,
                purpose=p.purpose,
                domain=p.domain,
                calibrated=pipeline.probes[p.task].calibrated,
                calibration=p.calibration,
            )
            for p in manifest.probes
        ],
        sound_type=None
        if sound_type is None or pipeline.sound_type_probe is None
        else SoundTypeInfo(
            labels=sound_type.labels,
            min_probability=sound_type.min_probability,
            metrics=sound_type.metrics,
            confusion=sound_type.confusion,
            confusion_source=sound_type.confusion_source,
            calibrated=pipeline.sound_type_probe.calibrated,
            calibration=sound_type.calibration,
        ),
        out_of_distribution=None
        if ood is None
        else OutOfDistributionInfo.model_validate(ood.model_dump(exclude={"file"})),
        report_index=None
        if manifest.report_index is None
        else manifest.report_index.model_dump(
            include={"count", "dim", "kind", "deidentified", "text_source"}
        ),
        text_side=manifest.text_side is not None,
        execution_providers=pipeline.backend.providers,
        threads={
            "inference_workers": settings.inference_workers,
            "intra_op": settings.intra_op_threads,
            "inter_op": settings.inter_op_threads,
            "faiss": settings.faiss_threads,
            "decode": settings.decode_workers,
        },
        limits=LimitsInfo(
            max_upload_bytes=settings.max_upload_bytes,
            max_audio_seconds=settings.max_audio_seconds,
            min_audio_seconds=manifest.audio.min_seconds,
            max_batch_size=pipeline.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            max_inference_requests=settings.max_inference_requests,
            max_top_k=settings.max_top_k,
        ),
        provenance=manifest.provenance.model_dump(mode="json"),
    )
