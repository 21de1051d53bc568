"""``acula reports build | validate | stats``: write, check and describe a report corpus (JSONL).

``build`` writes one report per recording with a progress bar and prints how many reports each validator
reason rejected (LLM reports that fail fall back to the template writer); ``validate`` re-checks a corpus
against the metadata (exit 1 on any failure); ``stats`` prints corpus size, distinct sentences, vocabulary.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from acula.training.commands import DatasetsOption, RootOption
from acula.training.reports.build import LLM_CACHE


def register(app: typer.Typer) -> None:
    reports = typer.Typer(help="Clinical reports written from dataset metadata.", no_args_is_help=True)
    reports.command("build")(build)
    reports.command("validate")(validate_command)
    reports.command("stats")(stats)
    app.add_typer(reports, name="reports")


def build(
    root: RootOption = Path("../shared/data"),
    out: Annotated[Path, typer.Option("--out", help="JSONL to write (appended; existing ids kept).")] = Path(
        "reports/reports.jsonl"
    ),
    backend: Annotated[str, typer.Option(help="Writer: template (default) or openai.")] = "template",
    datasets: DatasetsOption = None,
    seed: Annotated[int, typer.Option(help="Template phrasing seed (same seed, same corpus).")] = 0,
    concurrency: Annotated[int, typer.Option(help="openai: requests in flight at once.", min=1)] = 4,
    cache: Annotated[Path, typer.Option(help="openai: response cache folder.")] = LLM_CACHE,
) -> None:
    """Write one report per recording (template by default; ``--backend openai`` reads ACULA_LLM_*)."""
    from rich.progress import Progress

    from acula.training.data import load_records
    from acula.training.reports.build import build_reports, make_writer

    try:
        writer = make_writer(backend, seed, cache, concurrency)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--backend") from error
    records = load_records(root, datasets)
    out.parent.mkdir(parents=True, exist_ok=True)
    with Progress() as progress:
        task = progress.add_task(f"reports ({backend})", total=len(records))
        summary = build_reports(records, writer, out, on_progress=lambda n: progress.advance(task, n))
    typer.echo(
        f"{out}: {summary.written} written, {summary.already_present} already present, "
        f"{summary.fallbacks} fell back to the template, {summary.rejected} rejected"
    )
    for reason, count in summary.reasons.most_common():
        typer.echo(f"  {reason}: {count}")


def validate_command(
    reports: Annotated[Path, typer.Argument(help="reports.jsonl to check.")],
    root: RootOption = Path("../shared/data"),
) -> None:
    """Check every report against its recording's metadata; exit 1 when any fails."""
    from acula.training.data import load_records
    from acula.training.reports.schema import iter_reports
    from acula.training.reports.validator import validate

    records = {(r.dataset, r.recording_id): r for r in load_records(root)}
    reasons: Counter[str] = Counter()
    failed = total = 0
    for row in iter_reports(reports):
        total += 1
        record = records.get((row.dataset, row.recording_id))
        found = ["unknown_recording"] if record is None else validate(row.text, record)
        if found:
            failed += 1
            reasons.update(found)
            typer.echo(f"{row.report_id}: {', '.join(found)}")
    typer.echo(f"{total} reports, {failed} failed")
    for reason, count in reasons.most_common():
        typer.echo(f"  {reason}: {count}")
    if failed:
        raise typer.Exit(1)


def stats(
    reports: Annotated[Path, typer.Argument(help="reports.jsonl to describe.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Reports, distinct sentences and vocabulary size of a corpus."""
    from acula.training.reports.build import corpus_stats
    from acula.training.reports.schema import iter_reports

    result = corpus_stats(iter_reports(reports))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value}")
