"""The ``acula`` command line: the root app and the torch-free commands (serve, embed, predict, audio).

Other packages add commands through the ``acula.commands`` entry-point group: each entry point names a
``register(app)`` function. The training package registers data, reports, train, bench, export and pipeline
that way, so a service-only image, which does not contain it, simply lacks them. Plugins are loaded only
when the command line asks for something that is not a service command (or for the root help), so
``acula serve`` never imports the training package.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer

from acula.service import __version__
from acula.service.cli import audio, infer, serve

PLUGIN_GROUP = "acula.commands"

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


for _module in (serve, infer, audio):
    _module.register(app)
SERVICE_COMMANDS = frozenset({"serve", "embed", "predict", "audio"})


def _wants_plugins(argv: list[str]) -> bool:
    """False when the first word of the command line is a service command: no plugin is imported then."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first not in SERVICE_COMMANDS


_plugins_missing: list[str] | None = None


def load_plugins() -> list[str]:
    """Register every installed plugin's commands (once); returns the plugins this install lacks.

    A plugin whose package is absent from this install (the service image has no ``acula.training``) is
    skipped: its commands do not exist here. Any other import error is a real defect and is raised.
    """
    global _plugins_missing
    if _plugins_missing is not None:
        return _plugins_missing
    missing: list[str] = []
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            register = entry.load()
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith(entry.module.rsplit(".", 1)[0]):
                raise
            missing.append(entry.name)
            continue
        register(app)
    _plugins_missing = missing
    return missing


def full_app() -> typer.Typer:
    """The root app with every installed command (what ``acula --help`` lists); tests drive this one."""
    load_plugins()
    return app


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if _wants_plugins(args):
        load_plugins()
    app(args=args, prog_name="acula")
