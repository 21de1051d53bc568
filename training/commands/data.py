"""``acula data summary`` and ``acula data splits``: what the adapters read, and the subject-level splits.

``summary`` is how a user checks that their copy of a release was read completely (and what was skipped,
and why); ``splits`` regenerates ``training/data/splits.json`` from the data (commit the result).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from acula.training.commands import DatasetsOption, RootOption


def register(app: typer.Typer) -> None:
    data = typer.Typer(help="Datasets: adapters, counts, subject-level splits.", no_args_is_help=True)
    data.command("summary")(summary)
    data.command("splits")(splits_command)
    app.add_typer(data, name="data")


def summary(
    root: RootOption = Path("../shared/data"),
    datasets: DatasetsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Per dataset: recordings, subjects, hours and label counts per split, and what was skipped."""
    from acula.training.data import load_datasets
    from acula.training.data.summary import summarize

    report = summarize(load_datasets(root, datasets))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for dataset, block in report.items():
        typer.echo(_as_text(dataset, block))


def _as_text(dataset: str, block: dict[str, Any]) -> str:
    lines = [
        f"{dataset}: {block['recordings']} recordings, {block['subjects']} subjects, {block['hours']} h, "
        f"rates {block['rates_hz']} Hz"
        + (f"; {block['in_release']} listed (recordings + skipped)" if block["skipped"] else "")
    ]
    for split, part in block["splits"].items():
        lines.append(
            f"  {split}: {part['recordings']} recordings, {part['subjects']} subjects, {part['hours']} h"
        )
        for key, counts in part["labels"].items():
            lines.append(f"    {key}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for reason, count in block["skipped"].items():
        lines.append(f"  skipped {count}: {reason}")
    return "\n".join(lines)


def splits_command(
    root: RootOption = Path("../shared/data"),
    out: Annotated[Path, typer.Option("--out", help="Splits file to write.")] = Path(
        "training/data/splits.json"
    ),
    datasets: DatasetsOption = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Deal every subject anew instead of keeping the committed file.")
    ] = False,
) -> None:
    """Compute the subject-level splits and folds from the data and write them (commit the file).

    By default every subject already in the committed splits file keeps its side and fold (a model trained
    on one side must never see its test subjects move); only new subjects are dealt. ``--fresh`` re-deals
    everything: use it only before anything has been trained or benchmarked on the old file.
    """
    from acula.training.data import load_datasets, splits

    results = load_datasets(root, datasets, apply_splits=False)
    keep = {} if fresh else splits.read(splits.DEFAULT_FILE)
    assignments = splits.compute_all({name: result.records for name, result in results.items()}, keep)
    splits.write(assignments, out)
    for dataset, table in assignments.items():
        sides: dict[str, int] = {}
        for split, _fold in table.values():
            sides[split] = sides.get(split, 0) + 1
        typer.echo(
            f"{dataset}: {len(table)} recordings " + ", ".join(f"{k} {v}" for k, v in sorted(sides.items()))
        )
    typer.echo(f"wrote {out}")
