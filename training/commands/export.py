"""``acula export``: a trained checkpoint and its reports -> a verified model bundle (training/export/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        checkpoint: Annotated[
            Path,
            typer.Option("--checkpoint", exists=True, dir_okay=False, help="Aligned (or SSL) checkpoint."),
        ],
        out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write, e.g. models/NAME.")],
        reports: Annotated[
            Path | None,
            typer.Option("--reports", exists=True, dir_okay=False, help="Reports JSONL; omit for no index."),
        ] = None,
        root: Annotated[Path, typer.Option(help="Folder holding the dataset releases.")] = Path(
            "../shared/data"
        ),
        index: Annotated[str, typer.Option(help="flat (exact) | hnsw | ivf.")] = "flat",
        text_side: Annotated[bool, typer.Option(help="Also export the int8 text encoder.")] = True,
        threads: Annotated[int, typer.Option(help="torch / onnxruntime CPU threads.")] = 2,
        version: Annotated[str, typer.Option(help="Bundle version.")] = "0.1.0",
    ) -> None:
        """Export ONNX (parity-checked), probes, the report index and the model card into a bundle."""
        import torch

        from acula.training.export import ExportError, ExportOptions, export_bundle
        from acula.training.export.inputs import gather

        if index not in ("flat", "hnsw", "ivf"):
            raise typer.BadParameter("--index must be flat, hnsw or ivf")
        torch.set_num_threads(threads)
        inputs = gather(root, reports)
        options = ExportOptions(
            checkpoint=checkpoint,
            out=out,
            reports=reports,
            root=root,
            index_kind=index,  # type: ignore[arg-type]
            text_side=text_side,
            version=version,
        )
        try:
            result = export_bundle(
                options,
                inputs.records,
                inputs.tasks,
                inputs.reports,
                inputs.check,
                inputs.licences,
                typer.echo,
            )
        except (ExportError, ValueError) as exc:
            typer.echo(f"error: export failed: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(
            f"bundle {result.out}: {result.size_bytes / 1e6:.1f} MB, parity max |diff| "
            f"{result.parity_max_abs_diff:.2e}, {len(result.manifest.probes)} probes"
        )
