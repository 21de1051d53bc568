"""``acula pipeline``: the whole default model from the shared data, in one resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("pipeline")
    def pipeline_command(
        config: Annotated[
            Path, typer.Option("--config", "-c", exists=True, dir_okay=False, help="Pipeline TOML config.")
        ] = Path("configs/default.toml"),
        root: Annotated[Path, typer.Option(help="Folder holding the dataset releases.")] = Path(
            "../shared/data"
        ),
        out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write.")] = Path(
            "models/acula-default"
        ),
        work_dir: Annotated[
            Path | None, typer.Option(help="Intermediate outputs (resumable); default from the config.")
        ] = None,
        set_: Annotated[
            list[str], typer.Option("--set", help="Override a config value: --set ssl.epochs=1 (repeatable).")
        ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
    ) -> None:
        """Reports -> SSL -> alignment -> probes + export -> benchmark; finished stages are skipped."""
        from acula.training.commands.train import _overrides
        from acula.training.pipeline import load_pipeline_config, run_pipeline

        cfg = load_pipeline_config(config, _overrides(set_))
        if work_dir is not None:
            cfg = cfg.model_copy(update={"work_dir": work_dir})
        if not root.is_dir():
            typer.echo(f"error: data root {root} does not exist", err=True)
            raise typer.Exit(2)
        run_pipeline(cfg, root, out)
