"""``acula embed`` and ``acula predict``: the service's inference pipeline, from the command line.

Both build the Python API (:mod:`acula.service.model`) exactly as the service does (same decoding,
windowing, encoder batch size, pooling and probes) and ``predict --json`` prints the service's
``PredictResponse``, so the CLI and the HTTP API cannot disagree. Torch-free.

"Identical" is bit for bit when both run with the same ``ACULA_INTRA_OP_THREADS`` and the request's windows
are batched alone (a lone request); under load the service batches windows of several requests together and
onnxruntime's summation order can then move the last bit of a float32 (differences below 1e-6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from acula.service.bundle import DEFAULT_BUNDLE


def _model(bundle: Path, provider: str, threads: int) -> Any:
    """The bundle opened through the Python API, with the service's settings (``ACULA_*``) for the rest."""
    from acula.service.bundle import BundleError, missing_bundle_message
    from acula.service.model import AculaModel

    if not bundle.is_dir():
        typer.echo(f"error: {missing_bundle_message(bundle)}", err=True)
        raise typer.Exit(2)
    overrides: dict[str, Any] = {"provider": provider}
    if (
        threads
    ):  # else the service's threads per batch: onnxruntime's sums, hence the last digits, depend on them
        overrides["intra_op_threads"] = threads
    try:
        return AculaModel.load(bundle, **overrides)
    except BundleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _fail(path: Path, exc: Exception) -> None:
    code = getattr(exc, "code", type(exc).__name__)
    typer.echo(f"error: {path}: [{code}] {exc}", err=True)


Bundle = Annotated[Path, typer.Option("--bundle", "-b", help="Model bundle folder.")]
Provider = Annotated[str, typer.Option(help="cpu | cuda | auto.")]
Threads = Annotated[int, typer.Option(help="onnxruntime intra-op threads (0: as the service would).")]


def embed(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Recordings to embed.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npy: one pooled embedding per file.")],
    bundle: Bundle = DEFAULT_BUNDLE,
    joint: Annotated[bool, typer.Option(help="Write the L2-normalised joint embeddings instead.")] = False,
    provider: Provider = "cpu",
    threads: Threads = 0,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=0, help="Files embedded at once (0: CPUs / threads).")
    ] = 0,
) -> None:
    """Embed recordings with a bundle's encoder (the same windows and pooling as the service).

    Files are decoded and encoded ``--jobs`` at a time, each on its own (never batched with another file),
    so the rows do not depend on ``--jobs``. Every file that cannot be read is named before the command
    fails, and then nothing is written: row i of the output is always file i.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from acula.service.audio import AudioError
    from acula.service.settings import Settings, available_cpus

    threads = threads or Settings(bundle=bundle).intra_op_threads  # per file, as the service per batch
    pipeline = _model(bundle, provider, threads).pipeline
    workers = min(jobs or max(1, available_cpus() // threads), len(files))

    def one(path: Path) -> np.ndarray | AudioError:
        try:
            prediction = pipeline.embed(path)
        except AudioError as exc:
            return exc
        return prediction.joint if joint else prediction.embedding  # only the vector: no audio kept

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, files))
    failures = [
        (path, result) for path, result in zip(files, results, strict=True) if isinstance(result, Exception)
    ]
    for path, error in failures:
        _fail(path, error)
    if failures:
        typer.echo(
            f"error: {len(failures)} of {len(files)} file(s) could not be read; nothing written", err=True
        )
        raise typer.Exit(1)
    matrix = np.stack([row for row in results if isinstance(row, np.ndarray)]).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, matrix, allow_pickle=False)
    seconds = time.perf_counter() - started
    typer.echo(
        f"wrote {matrix.shape[0]} x {matrix.shape[1]} {'joint' if joint else 'embeddings'} to {out} "
        f"({seconds:.1f} s, {matrix.shape[0] / seconds:.1f} files/s, {workers} at once)"
    )


def predict(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A recording.")],
    bundle: Bundle = DEFAULT_BUNDLE,
    tasks: Annotated[
        list[str] | None,
        typer.Option("--task", "-t", help="Task (repeat); every applicable one if absent."),
    ] = None,
    sound_type: Annotated[
        str | None,
        typer.Option(
            help="heart | lung | cough | breathing: what the recording is (else the model decides)."
        ),
    ] = None,
    age_group: Annotated[str | None, typer.Option(help="paediatric | adult: whose recording.")] = None,
    site: Annotated[str | None, typer.Option(help="Auscultation site, e.g. 'posterior left'.")] = None,
    top_k: Annotated[int, typer.Option(help="Also list the k most similar reports.")] = 0,
    per_window: Annotated[bool, typer.Option(help="Also give every window's outputs.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the service's PredictResponse JSON.")
    ] = False,
    as_fhir: Annotated[
        bool, typer.Option("--fhir", help="Print the FHIR R4B Bundle (as /predict with Accept: FHIR).")
    ] = False,
    provider: Provider = "cpu",
    threads: Threads = 0,
) -> None:
    """Run the probes that apply to one recording, as POST /predict would.

    The sound type (stated, or the model's) decides which probes answer; the others are listed as skipped,
    with the reason. A recording the model is confident is no auscultation sound is refused
    ([not_auscultation], exit 1), as the service refuses it with a 422.
    """
    from acula.service.audio import AudioError
    from acula.service.core.errors import ServiceError
    from acula.service.fhir import fhir_bundle

    model = _model(bundle, provider, threads)
    try:
        response = model.predict(
            file,
            tasks=tasks or None,
            top_k=top_k,
            per_window=per_window,
            sound_type=sound_type,
            age_group=age_group,
            site=site,
        )
    except (AudioError, ServiceError) as exc:
        _fail(file, exc)
        raise typer.Exit(1) from exc
    if as_fhir:
        typer.echo(json.dumps(json.loads(fhir_bundle(response)), indent=2))
        return
    if as_json:
        typer.echo(json.dumps(response.model_dump(mode="json", exclude_none=True), indent=2))
        return
    _print_answer(response)


def _print_answer(response: Any) -> None:
    """The human-readable form of a PredictResponse."""
    typer.echo(
        f"{response.model.name} {response.model.version} ({response.model.digest}): "
        f"{response.input.duration_s:.2f} s at {response.input.native_rate} Hz, "
        f"{response.windows.count} window(s)"
    )
    sound, heard = response.sound_type, response.sound_type.model
    if sound.value is not None:
        chosen = f"sound type: {sound.value} ({sound.source}"
        chosen += f", probability {sound.probability:.2f})" if sound.probability is not None else ")"
    else:
        chosen = "sound type: none could be used"
    if heard is not None and (sound.source != "model" or sound.value is None):
        chosen += f"; the model hears {heard.label} ({heard.probability:.2f})"
        if heard.check is not None and heard.check.flagged:
            chosen += (
                f", but the recording is unlike its training {heard.label} recordings "
                f"(score {heard.check.score:.3f} > {heard.check.threshold:.3f})"
            )
    typer.echo(f"  {chosen}")
    ood = response.out_of_distribution
    if ood is not None:
        typer.echo(f"  out of distribution: {'yes' if ood.flagged else 'no'} (score {ood.score:.3f})")
    for name, result in response.tasks.items():
        if result.kind == "regression":
            typer.echo(f"  {name}: {result.value:.3g} {result.unit or ''}".rstrip())
        else:
            top = sorted(result.probabilities.items(), key=lambda item: -item[1])
            shown = ", ".join(f"{label} {p:.2f}" for label, p in top[:5])
            head = result.label if result.kind == "classification" else ("; ".join(result.labels) or "none")
            calibrated = "" if result.calibrated else ", uncalibrated"
            typer.echo(f"  {name}: {head}  ({shown}{calibrated})")
    for skip in response.skipped:
        typer.echo(f"  skipped {skip.task} [{skip.reason}]: {skip.message}")
    for warning in response.warnings:
        typer.echo(f"  warning [{warning.code}] {warning.message}")
    for hit in response.reports or []:
        typer.echo(
            f"  report {hit.id} ({hit.score:.3f}): {hit.text or '[text withheld: corpus not de-identified]'}"
        )


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
    app.command("predict")(predict)
