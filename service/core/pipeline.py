"""The inference pipeline: decode -> windows -> encoder -> pool -> sound type -> probes -> report search.

One object, built from a verified bundle, used by the HTTP service and by ``acula embed`` / ``acula predict``.
Its stages are plain synchronous functions so that both callers run exactly the same code: the CLI calls
:meth:`InferencePipeline.predict` (which encodes windows in chunks of ``max_batch_size``), the service calls
:meth:`decode` in a worker thread, sends the windows through the batcher (which calls the same
``backend.run``), then :meth:`summarise`. A test holds CLI and HTTP outputs identical for the same file.

:meth:`summarise` is also where the answer is made trustworthy: the sound type is decided (the client's, or
the bundle's sound-type classifier's), only the probes whose domain covers it run
(:mod:`~acula.service.core.applicability`), the out-of-distribution score is computed
(:mod:`~acula.service.core.ood`), and a confident ``not_auscultation`` is refused with
:class:`~acula.service.core.errors.NotAuscultation`, so the CLI and the service refuse the same uploads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acula.service.audio import AudioLimits, DecodedAudio, decode_audio
from acula.service.backends.onnx import EncoderBackend, OnnxEncoder, ProviderChoice
from acula.service.bundle import NOT_AUSCULTATION, SOUND_TYPES, BundleError, Manifest, load_manifest
from acula.service.core.applicability import (
    ClientContext,
    Notice,
    ProbeRequest,
    Skip,
    SoundTypeDecision,
    decide_sound_type,
    out_of_distribution_notice,
    quality_notices,
    select_probes,
)
from acula.service.core.errors import (
    InvalidModelOutput,
    NoReportIndex,
    NotAuscultation,
    NoTextSide,
    UnknownTask,
)
from acula.service.core.ood import OodResult, OodScorer
from acula.service.core.probes import LinearProbe, TaskOutput, load_probes
from acula.service.core.windowing import cut_windows, l2_normalise, pool_windows, window_starts
from acula.service.index import ReportHit, ReportIndex
from acula.service.settings import Settings
from acula.service.text import TextEncoder


@dataclass(frozen=True)
class WindowScores:
    """Probe outputs for one window, so a client can see where in the recording a finding sits."""

    index: int
    start_s: float
    end_s: float
    tasks: dict[str, TaskOutput]


@dataclass
class Prediction:
    """Everything ``/predict`` and ``acula predict`` return for one recording.

    ``sound_type`` is None when no probe was asked for (``/embed``, report search); then ``tasks``,
    ``skipped`` and ``notices`` are empty too.
    """

    audio: DecodedAudio
    window_count: int
    embedding: np.ndarray
    joint: np.ndarray
    tasks: dict[str, TaskOutput]
    reports: list[ReportHit] | None = None
    windows: list[WindowScores] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    sound_type: SoundTypeDecision | None = None
    out_of_distribution: OodResult | None = None
    sound_type_check: OodResult | None = None  # against the training recordings of the model's sound type
    skipped: list[Skip] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


# Batch sizes when none is configured. On CPU the encoder costs no less per window in big batches (measured
# in docs/PERFORMANCE.md), and a big batch on one thread is a long wait for every request in it; an
# accelerator needs big batches.
CPU_BATCH_SIZE = 8
CUDA_BATCH_SIZE = 32


def default_batch_size(providers: list[str]) -> int:
    """The batch size for the execution provider really in use."""
    return CUDA_BATCH_SIZE if providers and providers[0] == "CUDAExecutionProvider" else CPU_BATCH_SIZE


def model_identity(manifest: Manifest) -> dict[str, str | None]:
    """Name, version and digest (``sha256:`` + the manifest's own SHA-256, which covers every file's):
    what a client stores beside a prediction or an embedding to know which model made it. The digest is
    None only for a manifest never written (a test double)."""
    digest = manifest.manifest_sha256
    return {
        "name": manifest.name,
        "version": manifest.version,
        "digest": f"sha256:{digest}" if digest else None,
    }


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def _embedding_dim(manifest: Manifest) -> int:
    dim = manifest.encoder.embedding.shape[-1]
    if not isinstance(dim, int):
        raise BundleError(
            "manifest.json: encoder.embedding must have a fixed last dimension", "manifest.json"
        )
    return dim


class InferencePipeline:
    """A bundle made ready for inference: encoder session, probes and (optional) report index."""

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        backend: EncoderBackend,
        max_batch_size: int = 0,
        max_audio_seconds: float = 600.0,
        max_upload_bytes: int = 50 * 1024 * 1024,
        faiss_threads: int = 1,
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.contract = manifest.audio
        self.backend = backend
        self.max_batch_size = max_batch_size or default_batch_size(backend.providers)
        dim = _embedding_dim(manifest)
        self.probes: dict[str, LinearProbe] = load_probes(bundle_dir, manifest.probes, dim)
        self.sound_type_probe = _sound_type_probe(bundle_dir, manifest, dim)
        self.ood = (
            OodScorer(bundle_dir, manifest.out_of_distribution, dim)
            if manifest.out_of_distribution is not None
            else None
        )
        self.index = (
            ReportIndex(bundle_dir, manifest.report_index, threads=faiss_threads)
            if manifest.report_index is not None
            else None
        )
        self.text_encoder: TextEncoder | None = (
            TextEncoder(bundle_dir, manifest.text_side, manifest.encoder.joint)
            if manifest.text_side is not None
            else None
        )
        self.limits = AudioLimits(
            max_bytes=max_upload_bytes,
            max_seconds=max_audio_seconds,
            min_seconds=manifest.audio.min_seconds,
        )

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: Path,
        provider: ProviderChoice = "auto",
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        max_batch_size: int = 0,
        max_audio_seconds: float = 600.0,
        max_upload_bytes: int = 50 * 1024 * 1024,
        faiss_threads: int = 1,
    ) -> InferencePipeline:
        """Verify every file's SHA-256, open the encoder and check it against the manifest."""
        bundle_dir = Path(bundle_dir)
        manifest = load_manifest(bundle_dir)
        backend = OnnxEncoder(
            bundle_dir / manifest.encoder.file,
            manifest.encoder,
            provider=provider,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
        )
        return cls(
            bundle_dir, manifest, backend, max_batch_size, max_audio_seconds, max_upload_bytes, faiss_threads
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> InferencePipeline:
        """The pipeline exactly as the service builds it from ``settings`` (``ACULA_*`` and their defaults):
        the CLI and the Python API call this too, so thread counts and limits cannot drift between them."""
        pipeline = cls.from_bundle(
            settings.bundle,
            provider=settings.provider,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            max_batch_size=settings.max_batch_size,
            max_audio_seconds=settings.max_audio_seconds,
            max_upload_bytes=settings.max_upload_bytes,
            faiss_threads=settings.faiss_threads,
        )
        pipeline.limits = settings.audio_limits(pipeline.contract.min_seconds)  # every limit, decode cost too
        return pipeline

    # --- stages -------------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        self.backend.warm_up(self.contract.window_samples, self.max_batch_size)

    def decode(self, source: bytes | str | Path) -> DecodedAudio:
        """Decode, validate and resample to the bundle's rate (raises ``AudioError`` with a stable code)."""
        return decode_audio(source, self.contract.sample_rate, self.limits)

    def cut(self, audio: DecodedAudio) -> np.ndarray:
        return cut_windows(audio.samples, self.contract)

    def decode_and_cut(self, source: bytes | str | Path) -> tuple[DecodedAudio, np.ndarray]:
        """The recording and its windows, in one call: the service runs both in one trip to its worker pool,
        so its event loop only parses HTTP."""
        audio = self.decode(source)
        return audio, self.cut(audio)

    def encode(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the encoder on all windows in chunks of ``max_batch_size`` (the service batches instead)."""
        embeddings, joints = [], []
        for start in range(0, len(windows), self.max_batch_size):
            embedding, joint = self.backend.run(windows[start : start + self.max_batch_size])
            embeddings.append(embedding)
            joints.append(joint)
        return np.concatenate(embeddings), np.concatenate(joints)

    @property
    def model_identity(self) -> dict[str, str | None]:
        return model_identity(self.manifest)

    def check_request(
        self, tasks: list[str] | None, top_k: int, context: ClientContext | None = None
    ) -> ProbeRequest:
        """Validate options before any work is done: the tasks named (none: every applicable probe, chosen
        once the sound type is known) and what the client states about the recording."""
        tasks = tasks or []
        unknown = [task for task in tasks if task not in self.probes]
        if unknown:
            unknown = list(dict.fromkeys(unknown))  # the client's input: named once each, and only a few
            named = ", ".join(repr(task[:40]) for task in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise UnknownTask(f"unknown task(s) {named}{more}; this bundle has {list(self.probes)}")
        if top_k > 0 and self.index is None:
            raise NoReportIndex("this bundle has no report index")
        return ProbeRequest(tuple(dict.fromkeys(tasks)), context or ClientContext())

    def pool(self, embeddings: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window outputs -> one embedding and one L2-normalised joint embedding per recording."""
        return pool_windows(embeddings, self.contract), l2_normalise(pool_windows(joints, self.contract))

    def search(self, joint: np.ndarray, k: int) -> list[ReportHit]:
        if self.index is None:
            raise NoReportIndex("this bundle has no report index")
        return self.index.search(joint, k)

    def search_text(self, query: str, k: int) -> list[ReportHit]:
        """Reports closest to a free-text query; needs the bundle's optional text side."""
        if self.text_encoder is None:
            raise NoTextSide("this bundle has no text encoder: search with a recording instead")
        return self.search(self.text_encoder.embed(query), k)

    def decide_sound_type(
        self, embedding: np.ndarray, stated: ClientContext
    ) -> tuple[SoundTypeDecision, OodResult | None, OodResult | None]:
        """The client's sound type or the classifier's, with the classifier's own answer beside it; and the
        upload's out-of-distribution score, against every training recording and against those of the
        classifier's top sound type (None without a reference, or without a threshold for that type)."""
        probe, spec = self.sound_type_probe, self.manifest.sound_type
        model = probe.describe(probe.scores(embedding[None, :])[0]) if probe is not None else None
        threshold = spec.min_probability if spec else 0.5
        ood, check = None, None
        if self.ood is not None:
            label = model.label if model is not None and model.label in SOUND_TYPES else None
            ood, check = self.ood.assess(embedding, label)
        decision = decide_sound_type(
            stated.sound_type,
            model,
            threshold,
            out_of_distribution=ood is not None and ood.flagged,
            unlike_its_type=check is not None and check.flagged,
        )
        if decision.reason == NOT_AUSCULTATION and model is not None:
            probability = model.probabilities[NOT_AUSCULTATION]
            raise NotAuscultation(
                f"the model hears no heart, lung, cough or breathing sound in this upload (not_auscultation, "
                f"probability {probability:.2f}); if it is one, state sound_type",
                probability=probability,
                probabilities=model.probabilities,
                model=self.model_identity,
            )
        return decision, ood, check

    def summarise(
        self,
        audio: DecodedAudio,
        embeddings: np.ndarray,
        joints: np.ndarray,
        request: ProbeRequest | None,
        top_k: int = 0,
        per_window: bool = False,
    ) -> Prediction:
        """Pool, decide the sound type, apply the probes that apply and optionally search the report index
        (timings for each stage). ``request`` None runs no probe and decides nothing (``/embed``, report
        search): an embedding is wanted for any recording, auscultation or not."""
        started = time.perf_counter()
        InvalidModelOutput.check("encoder", embedding=embeddings, joint=joints)
        embedding, joint = self.pool(embeddings, joints)
        decision, ood, check, skipped, notices, tasks = None, None, None, [], [], []
        if request is not None:
            decision, ood, check = self.decide_sound_type(embedding, request.context)
            selection = select_probes(self.manifest.probes, decision, request)
            tasks, skipped, notices = selection.run, selection.skipped, selection.notices
        outputs = {}
        window_rows: dict[str, np.ndarray] = {}
        for task in tasks:
            probe = self.probes[task]
            outputs[task] = probe.describe(probe.scores(embedding[None, :])[0])
            if per_window:
                window_rows[task] = probe.scores(embeddings)
        InvalidModelOutput.check(
            "probes",
            outputs=outputs,
            windows=window_rows,
            sound_type=decision,
            ood=ood,
            sound_type_check=check,
        )
        notices += quality_notices(outputs)
        if ood is not None and ood.flagged:
            notices.append(out_of_distribution_notice(ood.score, ood.threshold))
        timings = {"probes": _ms(started)}
        windows = None
        if per_window:
            starts = window_starts(
                len(audio.samples), self.contract.window_samples, self.contract.hop_samples
            )
            rate = self.contract.sample_rate
            windows = [
                WindowScores(
                    index=i,
                    start_s=start / rate,
                    end_s=min(start + self.contract.window_samples, len(audio.samples)) / rate,
                    tasks={task: self.probes[task].describe(rows[i]) for task, rows in window_rows.items()},
                )
                for i, start in enumerate(starts)
            ]
        reports = None
        if top_k > 0:
            started = time.perf_counter()
            reports = self.search(joint, top_k)
            timings["search"] = _ms(started)
        return Prediction(
            audio=audio,
            window_count=len(embeddings),
            embedding=embedding,
            joint=joint,
            tasks=outputs,
            reports=reports,
            windows=windows,
            timings_ms=timings,
            sound_type=decision,
            out_of_distribution=ood,
            sound_type_check=check,
            skipped=skipped,
            notices=notices,
        )

    # --- whole recordings, synchronously (CLI) --------------------------------------------------------------
    def predict(
        self,
        source: bytes | str | Path,
        tasks: list[str] | None = None,
        top_k: int = 0,
        per_window: bool = False,
        context: ClientContext | None = None,
    ) -> Prediction:
        """What ``/predict`` answers: the applicable probes (or the ``tasks`` named) for one recording."""
        return self.run(source, self.check_request(tasks, top_k, context), top_k, per_window)

    def run(
        self,
        source: bytes | str | Path,
        request: ProbeRequest | None,
        top_k: int = 0,
        per_window: bool = False,
    ) -> Prediction:
        """The whole pipeline for one recording; ``request`` None runs no probe (embedding, report search)."""
        started = time.perf_counter()
        audio = self.decode(source)
        decode_ms = _ms(started)
        started = time.perf_counter()
        embeddings, joints = self.encode(self.cut(audio))
        inference_ms = _ms(started)
        prediction = self.summarise(audio, embeddings, joints, request, top_k, per_window)
        prediction.timings_ms = {"decode": decode_ms, "inference": inference_ms, **prediction.timings_ms}
        return prediction

    def embed(self, source: bytes | str | Path) -> Prediction:
        """Pooled and joint embeddings only (no probes): what ``acula embed`` and ``/embed`` return."""
        return self.run(source, None)


def _sound_type_probe(bundle_dir: Path, manifest: Manifest, dim: int) -> LinearProbe | None:
    """The bundle's sound-type classifier, its labels checked: the gate trusts them to be sound types."""
    spec = manifest.sound_type
    if spec is None:
        return None
    unknown = sorted(set(spec.labels) - {*SOUND_TYPES, NOT_AUSCULTATION})
    if unknown or len(spec.labels) < 2:
        raise BundleError(
            f"{spec.file}: sound-type labels {spec.labels} must be two or more of "
            f"{[*SOUND_TYPES, NOT_AUSCULTATION]} (unknown: {unknown})",
            file=spec.file,
        )
    return LinearProbe(spec, Path(bundle_dir) / spec.file, dim)
