"""Subcommands of ``acula``: one module per group, each with ``register(app: typer.Typer)``.

Keep imports at the top of these modules light (typer, pathlib); import torch, onnxruntime, faiss and the
like inside the command functions. Options several commands share are declared here, once, so their flags
and help read the same everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RootOption = Annotated[Path, typer.Option("--root", help="Folder with one sub-folder per dataset.")]
DatasetsOption = Annotated[
    list[str] | None, typer.Option("--datasets", "-d", help="Datasets to use (default: all present).")
]
