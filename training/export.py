"""``acula export``: a trained checkpoint -> a model bundle the service can load (``service/bundle.py``).

The steps, each in its own module: the encoder to ONNX with a parity check on real recordings
(:mod:`training.export_onnx`); pooled embeddings of the benchmark recordings computed *through the exported
ONNX graph and the service's own windowing*, so the probes are fitted on exactly what the service will feed
them (:mod:`training.export_probes`); the training-side report corpus and its FAISS index
(:mod:`training.export_index`); the optional text side (:mod:`training.export_text`); the model card
(:mod:`training.model_card`); finally ``write_manifest`` hashes every file.

The bundle is written into ``<out>.partial`` and renamed into place only when everything succeeded, so a
failed export never leaves a half-bundle where the service looks for one.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acula.service.bundle import (
    AudioContract,
    DatasetProvenance,
    EncoderSpec,
    Manifest,
    ProbeSpec,
    Provenance,
    ReportIndexSpec,
    TensorSpec,
    write_manifest,
)
from acula.service.core.windowing import cut_windows, l2_normalise, pool_windows
from acula.training.data.records import Recording
from acula.training.export_index import IndexKind, build_index, corpus_rows, write_corpus, write_index
from acula.training.export_onnx import ExportError, check_parity, export_encoder, parity_cases
from acula.training.export_probes import ProbeData, ProbeKind, fit_probe

Log = Callable[[str], None]


@dataclass
class ProbeTask:
    """One benchmark task as export needs it: recordings with targets on each side of its subject split."""

    name: str
    kind: ProbeKind
    train: list[tuple[Recording, Any]]
    test: list[tuple[Recording, Any]]
    labels: list[str] = field(default_factory=list)
    unit: str | None = None
    description: str = ""


@dataclass
class ExportOptions:
    checkpoint: Path
    out: Path
    reports: Path | None = None
    root: Path = Path("../shared/data")
    index_kind: IndexKind = "flat"
    name: str | None = None
    version: str = "0.1.0"
    window_seconds: float | None = None  # None: the crop length the checkpoint was trained on
    hop_seconds: float | None = None  # None: equal to the window (no overlap)
    pooling: str = "mean"
    min_seconds: float = 0.5
    text_side: bool = True
    cache_dir: Path | None = None
    configs: dict[str, Any] = field(default_factory=dict)  # run configs, recorded in the provenance
    batch_size: int = 32
    parity_tolerance: float = 1e-4  # max |onnxruntime - torch|; raising it is recorded in the model card
    extra_card: dict[str, Any] = field(default_factory=dict)  # benchmark rows etc. for the model card


@dataclass
class ExportResult:
    manifest: Manifest
    out: Path
    parity_max_abs_diff: float
    size_bytes: int
    timings_s: dict[str, float]
    notes: dict[str, Any] = field(default_factory=dict)


def git_commit(cwd: Path | None = None) -> str:
    """The project's commit, or 'unknown' outside a git checkout (a dirty tree is marked '+dirty')."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "") if head else "unknown"


class RecordingEmbedder:
    """Pooled embeddings of whole recordings through the exported ONNX graph, as the service computes them."""

    def __init__(self, onnx_path: Path, spec: EncoderSpec, contract: AudioContract, cache_dir: Path | None):
        from acula.service.backends.onnx import OnnxEncoder
        from acula.training.train.audio_dataset import AudioCache

        self.encoder = OnnxEncoder(
            onnx_path, spec, provider="cpu", intra_op_threads=max(1, torch.get_num_threads())
        )
        self.contract = contract
        self.cache = AudioCache(cache_dir, contract.sample_rate)
        self._memo: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def usable(self, records: Sequence[Recording]) -> list[Recording]:
        """The records whose audio decodes (decoding them into the cache on the way)."""
        return self.cache.prepare(list(records), progress=False)

    def samples(self, record: Recording) -> np.ndarray:
        return np.asarray(self.cache.load(record), dtype=np.float32)

    def embed(self, records: Sequence[Recording], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """``(n, D)`` pooled embeddings and ``(n, J)`` pooled, re-normalised joint embeddings."""
        todo = [r for r in records if (r.dataset, r.recording_id) not in self._memo]
        pending: list[tuple[Recording, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            windows = np.concatenate([w for _, w in pending])
            embeddings, joints = [], []
            for start in range(0, len(windows), batch_size):
                e, j = self.encoder.run(windows[start : start + batch_size])
                embeddings.append(e)
                joints.append(j)
            emb, joint = np.concatenate(embeddings), np.concatenate(joints)
            offset = 0
            for record, w in pending:
                rows = slice(offset, offset + len(w))
                self._memo[(record.dataset, record.recording_id)] = (
                    pool_windows(emb[rows], self.contract),
                    l2_normalise(pool_windows(joint[rows], self.contract)),
                )
                offset += len(w)
            pending.clear()

        for record in todo:
            pending.append((record, cut_windows(self.samples(record), self.contract)))
            if sum(len(w) for _, w in pending) >= 4 * batch_size:
                flush()
        flush()
        pairs = [self._memo[(r.dataset, r.recording_id)] for r in records]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _targets(kind: ProbeKind, values: list[Any], labels: list[str]) -> np.ndarray:
    if kind == "multilabel":
        return np.asarray([[int(label in set(v)) for label in labels] for v in values], dtype=np.int64)
    if kind == "regression":
        return np.asarray(values, dtype=np.float64)
    return np.asarray([str(v) for v in values])


def fit_probes(
    tasks: Sequence[ProbeTask], embedder: RecordingEmbedder, out: Path, log: Log, batch_size: int = 32
) -> list[ProbeSpec]:
    specs = []
    for task in tasks:
        started = time.perf_counter()
        usable = {id(r) for r in embedder.usable([r for r, _ in task.train + task.test])}
        dropped = len(task.train) + len(task.test) - len(usable)
        if dropped:
            log(f"probe {task.name}: {dropped} recording(s) left out, their audio cannot be decoded")
        task = ProbeTask(
            task.name,
            task.kind,
            [pair for pair in task.train if id(pair[0]) in usable],
            [pair for pair in task.test if id(pair[0]) in usable],
            task.labels,
            task.unit,
            task.description,
        )
        x_train, _ = embedder.embed([r for r, _ in task.train], batch_size)
        x_test, _ = embedder.embed([r for r, _ in task.test], batch_size)
        data = ProbeData(
            task=task.name,
            kind=task.kind,
            x_train=x_train.astype(np.float64),
            y_train=_targets(task.kind, [y for _, y in task.train], task.labels),
            x_test=x_test.astype(np.float64),
            y_test=_targets(task.kind, [y for _, y in task.test], task.labels),
            labels=list(task.labels),
            unit=task.unit,
            description=task.description,
            groups_train=np.asarray([r.subject_id for r, _ in task.train]),
        )
        spec = fit_probe(data, out)
        specs.append(spec)
        log(f"probe {task.name}: {spec.metrics} ({time.perf_counter() - started:.1f}s)")
    return specs


def _parity_recordings(records: Sequence[Recording], embedder: RecordingEmbedder, count: int = 4) -> list:
    """``count`` real training-side recordings, taken round-robin over datasets (rates and lengths differ)."""
    by_dataset: dict[str, list[Recording]] = {}
    for record in records:
        if record.is_training_side:
            by_dataset.setdefault(record.dataset, []).append(record)
    queues = [items[len(items) // 2 :] + items[: len(items) // 2] for _, items in sorted(by_dataset.items())]
    chosen: list[Recording] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return [embedder.samples(r) for r in chosen]


def _report_vectors(model: Any, rows: list[dict[str, Any]], teacher_spec: Any, cache_dir: Path | None) -> Any:
    """Joint-space vectors of the report texts: frozen teacher (cached on disk) -> the model's text head."""
    from acula.training.teacher import TeacherCache, load_teacher
    from acula.training.train.audio_dataset import default_cache_dir

    teacher = load_teacher(teacher_spec)
    cache = TeacherCache(teacher, (cache_dir or default_cache_dir()) / "teacher")
    hidden = cache.encode([row["text"] for row in rows])
    with torch.no_grad():
        joint = model.encode_text(torch.from_numpy(hidden)).numpy()
    return l2_normalise(joint), teacher


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
    from acula.training.model_card import write_model_card
    from acula.training.nets.factory import load_checkpoint, read_checkpoint

    timings: dict[str, float] = {}
    notes: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    if reports:  # refuse an identifying corpus before any slow work
        if check_identifying is None:
            raise ExportError("a report corpus needs the identifying-information check; none was given")
        training_side = {(r.dataset, r.recording_id) for r in records if r.is_training_side}
        kept = [
            r
            for r in reports
            if r.get("split") == "train" and (r["dataset"], r["recording_id"]) in training_side
        ]
        notes["reports_left_out_not_training_side"] = len(reports) - len(kept)
        rows = corpus_rows(kept, check_identifying)
        log(f"report corpus: {len(rows)} training-side reports, {len(reports) - len(kept)} others left out")
    payload = read_checkpoint(options.checkpoint)
    model = load_checkpoint(options.checkpoint)
    window_seconds = options.window_seconds or float(payload.get("window_seconds", 4.0))
    contract = AudioContract(
        sample_rate=model.sample_rate,
        window_seconds=window_seconds,
        hop_seconds=options.hop_seconds or window_seconds,
        pooling=options.pooling,  # type: ignore[arg-type]
        min_seconds=options.min_seconds,
    )
    staging = options.out.with_name(options.out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    started = time.perf_counter()
    onnx_path = export_encoder(
        model,
        staging / "encoder.onnx",
        contract.window_samples,
        min_samples=max(round(contract.min_seconds * contract.sample_rate), model.config.frontend.n_fft),
        max_samples=contract.sample_rate * 600,
    )
    encoder_spec = EncoderSpec(
        input=TensorSpec(name="waveform", shape=["batch", "samples"]),
        embedding=TensorSpec(name="embedding", shape=["batch", model.embedding_dim]),
        joint=TensorSpec(name="joint", shape=["batch", model.joint_dim]),
    )
    embedder = RecordingEmbedder(onnx_path, encoder_spec, contract, options.cache_dir)
    cases = parity_cases(
        _parity_recordings(records, embedder),
        contract.window_samples,
        round(contract.min_seconds * contract.sample_rate),
    )
    parity = check_parity(model, onnx_path, cases, options.parity_tolerance)
    notes["parity_tolerance"] = options.parity_tolerance
    notes["parity_per_output"] = parity.per_output
    timings["onnx_export_and_parity"] = time.perf_counter() - started
    log(f"encoder.onnx: parity max |diff| {parity.max_abs_diff:.2e} over shapes {parity.cases}")

    started = time.perf_counter()
    probes = fit_probes(tasks, embedder, staging, log, options.batch_size)
    timings["probes"] = time.perf_counter() - started

    report_index, text_side = None, None
    if rows:
        started = time.perf_counter()
        teacher = None
        if model.text_head is not None:
            teacher_spec = _teacher_spec(payload)
            vectors, teacher = _report_vectors(model, rows, teacher_spec, options.cache_dir)
            notes["index_vectors"] = "text: teacher embedding of each report through the aligned text head"
        else:  # SSL-only model: no text head; index the audio each report was written for
            by_id = {(r.dataset, r.recording_id): r for r in records}
            vectors = embedder.embed([by_id[(row["dataset"], row["recording_id"])] for row in rows])[1]
            notes["index_vectors"] = "audio: joint embedding of each report's recording (SSL-only model)"
        index, recall = build_index(vectors, options.index_kind)
        write_index(index, staging / "reports.faiss")
        write_corpus(rows, staging / "reports.jsonl")
        writers = {str(row.get("writer") or "template") for row in rows}
        report_index = ReportIndexSpec(
            count=len(rows),
            dim=int(vectors.shape[1]),
            kind=options.index_kind,
            recall_at_10_vs_exact=recall,
            deidentified=True,  # corpus_rows refused the export otherwise
            text_source="template"
            if writers <= {"template"}
            else ("llm" if "template" not in writers else "mixed"),
        )
        timings["report_index"] = time.perf_counter() - started
        log(f"report index: {len(rows)} reports, {options.index_kind}, recall@10 vs exact {recall}")
        if options.text_side and teacher is not None:
            from acula.training.export_text import export_text_side

            started = time.perf_counter()
            exported = export_text_side(teacher, model.text_head, staging, [r["text"] for r in rows[:32]])
            text_side = exported.spec
            notes["text_side_min_cosine_vs_torch"] = round(exported.min_cosine, 5)
            timings["text_side"] = time.perf_counter() - started
            log(
                f"text side: {exported.size_bytes / 1e6:.1f} MB, "
                f"min cosine vs torch {exported.min_cosine:.4f}"
            )

    counts: dict[str, int] = {}
    for record in records:
        if record.is_training_side:
            counts[record.dataset] = counts.get(record.dataset, 0) + 1
    provenance = Provenance(
        datasets=[
            DatasetProvenance(
                name=name, licence=licences.get(name, "see the dataset's release"), recordings=n
            )
            for name, n in sorted(counts.items())
        ],
        training_config=json.loads(
            json.dumps(options.configs | {"export": _export_config(options)}, default=str)
        ),
        project_commit=git_commit(),
        teacher=_teacher_spec(payload).path if model.text_head is not None else None,
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    )
    manifest = Manifest(
        name=options.name or options.out.name,
        version=options.version,
        description=(
            "Auscultation audio encoder aligned to clinical reports (AcuLa), with linear probes and a "
            "de-identified report index. Research and decision support only, not a diagnostic device."
        ),
        audio=contract,
        encoder=encoder_spec,
        probes=probes,
        report_index=report_index,
        text_side=text_side,
        provenance=provenance,
    )
    notes["parity_max_abs_diff"] = parity.max_abs_diff
    write_model_card(staging / "MODEL_CARD.md", manifest, notes | options.extra_card)
    (staging / "export_notes.json").write_text(json.dumps(notes | {"timings_s": timings}, indent=2) + "\n")
    manifest = write_manifest(staging, manifest, extra_files=["MODEL_CARD.md", "export_notes.json"])
    shutil.rmtree(options.out, ignore_errors=True)
    staging.replace(options.out)
    size = sum(p.stat().st_size for p in options.out.rglob("*") if p.is_file())
    return ExportResult(manifest, options.out, parity.max_abs_diff, size, timings, notes)


def _teacher_spec(payload: dict[str, Any]) -> Any:
    """The teacher the checkpoint was aligned with (its run config), else the packaged default."""
    from acula.training.teacher import TeacherSpec

    run_config = payload.get("run_config") or {}
    return TeacherSpec.model_validate(run_config.get("teacher") or {})


def _export_config(options: ExportOptions) -> dict[str, Any]:
    return {
        "checkpoint": str(options.checkpoint),
        "index_kind": options.index_kind,
        "window_seconds": options.window_seconds,
        "hop_seconds": options.hop_seconds,
        "pooling": options.pooling,
        "text_side": options.text_side,
    }
