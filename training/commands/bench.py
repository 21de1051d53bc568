"""``acula bench``: compare encoders (and the openSMILE baseline) on every benchmark task, in one table."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class ProbeChoice(StrEnum):
    logistic = "logistic"
    opera = "opera"
    both = "both"


class MapChoice(StrEnum):
    tsne = "tsne"
    pca = "pca"


EncoderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--encoder",
        "-e",
        help="A checkpoint (.pt), a bundle folder or 'opensmile'; NAME=PATH names the row. Repeatable.",
    ),
]
BaselineOpt = Annotated[list[str] | None, typer.Option("--baseline", help="Baseline rows: 'opensmile'.")]
RandomOpt = Annotated[
    bool, typer.Option("--random-init", help="Add the first checkpoint's architecture with random weights.")
]
TasksOpt = Annotated[
    list[str] | None,
    typer.Option("--tasks", "-t", help="Task names (repeatable or comma-separated); default: every task."),
]
ProbeOpt = Annotated[ProbeChoice, typer.Option("--probe", help="logistic (fast), opera, or both.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for results.json, results.md, plots/.")]
RootOpt = Annotated[Path, typer.Option("--root", help="Folder holding the dataset releases.")]
ReportsOpt = Annotated[
    Path | None, typer.Option("--reports", help="Reports JSONL: enables audio->report retrieval (test side).")
]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Feature/audio cache; default $ACULA_CACHE or ~/.cache/acula."),
]
ThreadsOpt = Annotated[
    int, typer.Option("--threads", min=1, help="CPU threads (torch, onnxruntime, openSMILE).")
]
SeedsOpt = Annotated[int, typer.Option("--seeds", min=1, help="OPERA probe seeds (0..N-1).")]
MapOpt = Annotated[MapChoice, typer.Option("--map", help="2-D embedding map method.")]
PlotsOpt = Annotated[bool, typer.Option("--plots/--no-plots", help="Write ROC curves and embedding maps.")]


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        out: OutOpt,
        encoder: EncoderOpt = None,
        baseline: BaselineOpt = None,
        random_init: RandomOpt = False,
        tasks: TasksOpt = None,
        probe: ProbeOpt = ProbeChoice.logistic,
        root: RootOpt = Path("../shared/data"),
        reports: ReportsOpt = None,
        cache_dir: CacheOpt = None,
        threads: ThreadsOpt = 2,
        seeds: SeedsOpt = 5,
        embedding_map: MapOpt = MapChoice.tsne,
        plots: PlotsOpt = True,
    ) -> None:
        """Probe frozen embeddings on every task; retrieval and zero-shot for aligned encoders."""
        import dataclasses

        from acula.training.bench.opera import OperaConfig
        from acula.training.bench.runner import BenchConfig, run_bench

        names = [name for item in tasks or [] for name in item.split(",") if name]
        probes = ("logistic", "opera") if probe is ProbeChoice.both else (probe.value,)
        unknown = [b for b in baseline or [] if b != "opensmile"]
        if unknown:
            raise typer.BadParameter(f"unknown baseline(s) {unknown}: 'opensmile' is the one baseline")
        config = BenchConfig(
            root=root,
            out=out,
            encoders=list(encoder or []) + list(baseline or []),
            random_init=random_init,
            tasks=names or None,
            probes=probes,
            reports=reports,
            cache_dir=cache_dir,
            threads=threads,
            opera=dataclasses.replace(OperaConfig(), seeds=tuple(range(seeds))),
            map_method=embedding_map.value,
            plots=plots,
        )
        results = run_bench(config, log=typer.echo)
        typer.echo((out / "results.md").read_text())
        typer.echo(f"results: {out / 'results.json'} ({results['meta']['timings_s']['total']} s)")
