"""``acula export``: a trained checkpoint -> a model bundle the service can load (``service/bundle.py``).

This module only sequences the steps, each in its own module: the encoder to ONNX with a parity check on
real recordings (:mod:`.onnx`); pooled embeddings computed *through the exported graph and the service's own
windowing* (:mod:`.embedder`), on which the calibrated probes are fitted (:mod:`.probes`), the sound-type
classifier (:mod:`.sound_type`, with generated non-auscultation clips) and the out-of-distribution reference
(:mod:`.ood`); the training-side report corpus and its FAISS index (:mod:`.index`); the optional text side
(:mod:`.text`); provenance (:mod:`.provenance`) and the model card (:mod:`.card`); finally
``write_manifest`` hashes every file. What export reads from the rest of the project is gathered in
:mod:`.inputs`.

The bundle is written into ``<out>.partial`` and renamed into place only when everything succeeded, so a
failed export never leaves a half-bundle where the service looks for one.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acula.service.bundle import (
    Manifest,
    OutOfDistributionSpec,
    ReportIndexSpec,
    SoundTypeSpec,
    TextSideSpec,
    write_manifest,
)
from acula.training.data import synthetic
from acula.training.data.records import Recording
from acula.training.export import card, index, onnx, ood, probes, provenance, sound_type
from acula.training.export.embedder import RecordingEmbedder
from acula.training.export.index import IndexKind
from acula.training.export.inputs import ProbeTask
from acula.training.export.onnx import ExportError

Log = Callable[[str], None]
DESCRIPTION = (
    "Auscultation audio encoder aligned to clinical reports (AcuLa), with linear probes and a "
    "de-identified report index. Research and decision support only, not a diagnostic device."
)
__all__ = ["ExportError", "ExportOptions", "ExportResult", "ProbeTask", "export_bundle"]


@dataclass
class ExportOptions:
    checkpoint: Path
    out: Path
    reports: Path | None = None
    root: Path = Path("../shared/data")
    index_kind: IndexKind = "flat"
    name: str | None = None
    version: str = "0.1.0"
    text_side: bool = True
    cache_dir: Path | None = None
    configs: dict[str, Any] = field(default_factory=dict)  # run configs, recorded in the provenance
    batch_size: int = 32
    parity_tolerance: float = 1e-4  # max |onnxruntime - torch|; raising it is recorded in the model card
    extra_card: dict[str, Any] = field(default_factory=dict)  # benchmark rows etc. for the model card
    sound_type: bool = True  # fit the sound-type classifier (left out when a type has no training data)
    out_of_distribution: bool = True  # write ood_reference.npz with its held-out threshold
    generated_clips: int = 12  # generated non-auscultation clips per generator for training ...
    generated_held_out: int = 4  # ... and for the held-out figures (disjoint seeds)

    def recorded(self) -> dict[str, Any]:
        """The options worth keeping in the provenance next to the run configs."""
        return {
            "checkpoint": str(self.checkpoint),
            "index_kind": self.index_kind,
            "text_side": self.text_side,
        }


@dataclass
class ExportResult:
    manifest: Manifest
    out: Path
    parity_max_abs_diff: float
    size_bytes: int
    timings_s: dict[str, float]
    notes: dict[str, Any] = field(default_factory=dict)


class _Steps:
    """Times each step into ``timings`` and logs its summary line."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.timings: dict[str, float] = {}
        self._started = 0.0
        self._name = ""

    def start(self, name: str) -> None:
        self._name, self._started = name, time.perf_counter()

    def done(self, message: str) -> None:
        self.timings[self._name] = time.perf_counter() - self._started
        self.log(message)


def export_bundle(
    options: ExportOptions,
    records: Sequence[Recording],
    tasks: Sequence[ProbeTask],
    reports: Sequence[dict[str, Any]] | None,
    check_identifying: Callable[[str], list[str]] | None,
    licences: dict[str, str],
    log: Log = print,
) -> ExportResult:
    """Write a complete, verified bundle for ``options.checkpoint`` into ``options.out``."""
    from acula.training.nets.factory import load_checkpoint, read_checkpoint

    steps = _Steps(log)
    notes: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    if reports:  # refuse an identifying corpus before any slow work
        if check_identifying is None:
            raise ExportError("a report corpus needs the identifying-information check; none was given")
        rows, left_out = index.training_side_corpus(reports, records, check_identifying)
        notes["reports_left_out_not_training_side"] = left_out
        log(f"report corpus: {len(rows)} training-side reports, {left_out} others left out")
    payload = read_checkpoint(options.checkpoint)
    model = load_checkpoint(options.checkpoint)
    contract = model.config.audio  # the one windowing contract, as trained; the manifest copies it
    staging = options.out.with_name(options.out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    steps.start("onnx_export_and_parity")
    onnx_path = onnx.export_encoder(
        model,
        staging / "encoder.onnx",
        contract.window_samples,
        min_samples=max(round(contract.min_seconds * contract.sample_rate), model.config.frontend.n_fft),
        max_samples=contract.sample_rate * 600,
    )
    encoder_spec = onnx.encoder_spec(model)
    embedder = RecordingEmbedder(onnx_path, encoder_spec, contract, options.cache_dir)
    parity_records, real = onnx.parity_recordings(records, embedder.samples)
    cases = onnx.parity_cases(
        real, contract.window_samples, round(contract.min_seconds * contract.sample_rate)
    )
    parity = onnx.check_parity(model, onnx_path, cases, options.parity_tolerance)
    notes |= {
        "parity_tolerance": options.parity_tolerance,
        "parity_per_output": parity.per_output,
        "parity_recordings": [
            {"id": f"{r.dataset}/{r.recording_id}", "native_rate": r.native_rate, "seconds": r.duration_s}
            for r in parity_records
        ],
    }
    steps.done(f"encoder.onnx: parity max |diff| {parity.max_abs_diff:.2e} over shapes {parity.cases}")

    steps.start("probes")
    probe_specs = probes.fit_probes(tasks, embedder, staging, log, options.batch_size)
    steps.done(f"{len(probe_specs)} probes")

    generated: list[Recording] = []
    if options.sound_type or options.out_of_distribution:
        steps.start("generated_clips")
        folder = (options.cache_dir or _default_cache_dir()) / "synthetic"
        generated = synthetic.generated_records(folder, options.generated_clips, held_out=False)
        generated += synthetic.generated_records(folder, options.generated_held_out, held_out=True)
        steps.done(f"{len(generated)} generated non-auscultation clips")

    sound_type_spec: SoundTypeSpec | None = None
    if options.sound_type:
        steps.start("sound_type")
        sound_type_spec = sound_type.classifier(
            [*records, *generated], embedder, staging, log, options.batch_size
        )
        accuracy = sound_type_spec.metrics.get("accuracy") if sound_type_spec else None
        steps.done(f"sound type: held-out accuracy {accuracy}")

    ood_spec: OutOfDistributionSpec | None = None
    if options.out_of_distribution:
        steps.start("out_of_distribution")
        ood_spec = ood.reference_from_records(records, generated, embedder, staging, options.batch_size)
        steps.done(
            f"out-of-distribution threshold {ood_spec.threshold:.4f}, flag rates {ood_spec.flag_rates}"
        )

    report_index: ReportIndexSpec | None = None
    text_side: TextSideSpec | None = None
    teacher = None
    if rows:
        steps.start("report_index")
        if model.text_head is not None:
            from acula.training.teacher import load_teacher

            teacher = load_teacher(provenance.teacher_spec(payload))
            vectors = index.report_vectors(model, rows, teacher, options.cache_dir)
            notes["index_vectors"] = "text: teacher embedding of each report through the aligned text head"
        else:  # SSL-only model: no text head; index the audio each report was written for
            by_id = {(r.dataset, r.recording_id): r for r in records}
            vectors = embedder.embed([by_id[(row["dataset"], row["recording_id"])] for row in rows])[1]
            notes["index_vectors"] = "audio: joint embedding of each report's recording (SSL-only model)"
        report_index = index.write_report_index(rows, vectors, options.index_kind, staging)
        steps.done(
            f"report index: {len(rows)} reports, {options.index_kind}, "
            f"recall@10 vs exact {report_index.recall_at_10_vs_exact}"
        )
    if options.text_side and teacher is not None and model.text_head is not None:
        from acula.training.export.text import export_text_side

        steps.start("text_side")
        exported = export_text_side(teacher, model.text_head, staging, [r["text"] for r in rows[:32]])
        text_side = exported.spec
        notes["text_side_min_cosine_vs_torch"] = round(exported.min_cosine, 5)
        steps.done(
            f"text side: {exported.size_bytes / 1e6:.1f} MB, min cosine vs torch {exported.min_cosine:.4f}"
        )

    pretrained = provenance.pretrained_weights(model.config, staging)
    manifest = Manifest(
        name=options.name or options.out.name,
        version=options.version,
        description=DESCRIPTION,
        audio=contract,
        encoder=encoder_spec,
        probes=probe_specs,
        sound_type=sound_type_spec,
        out_of_distribution=ood_spec,
        report_index=report_index,
        text_side=text_side,
        provenance=provenance.provenance(
            records,
            licences,
            options.configs | {"export": options.recorded()},
            provenance.teacher_spec(payload).path if model.text_head is not None else None,
            pretrained,
            bundle_dir=options.out,
        ),
    )
    notes["parity_max_abs_diff"] = parity.max_abs_diff
    card.write_model_card(staging / "MODEL_CARD.md", manifest, notes | options.extra_card)
    (staging / "export_notes.json").write_text(
        json.dumps(notes | {"timings_s": steps.timings}, indent=2) + "\n"
    )
    licence_files = pretrained.licence_files if pretrained is not None else []
    manifest = write_manifest(
        staging, manifest, extra_files=["MODEL_CARD.md", "export_notes.json", *licence_files]
    )
    shutil.rmtree(options.out, ignore_errors=True)
    staging.replace(options.out)
    size = sum(p.stat().st_size for p in options.out.rglob("*") if p.is_file())
    return ExportResult(manifest, options.out, parity.max_abs_diff, size, steps.timings, notes)


def _default_cache_dir() -> Path:
    from acula.training.train.audio_dataset import default_cache_dir

    return default_cache_dir()
