"""The training commands of ``acula``, registered on the root app (``acula.service.cli``) as a plugin.

Every module in :mod:`acula.training.commands` defines ``register(app)``; this module only collects them.
Command modules import torch and other heavy libraries inside the command functions, so listing the
commands (``acula --help``) stays fast and works without torch.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from acula.training import commands


def register(app: typer.Typer) -> None:
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(app)
