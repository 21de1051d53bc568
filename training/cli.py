"""The ``acula`` command line.

Every module in :mod:`training.commands` defines ``register(app)`` and adds its subcommands; this file only
collects them. Command modules import heavy libraries (torch, onnxruntime, faiss) inside the command
functions, so ``acula --version`` and ``acula serve`` work in a torch-free service install.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

import training.commands
from service import __version__

app = typer.Typer(
    name="acula",
    help="AcuLa: data, reports, training, benchmark, export and serving of auscultation audio encoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"acula {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """acula: train, benchmark and serve auscultation audio encoders aligned to clinical reports."""


def _register_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(training.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"training.commands.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    app()
