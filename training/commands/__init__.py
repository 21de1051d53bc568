"""Subcommands of ``acula``: one module per group, each with ``register(app: typer.Typer)``.

Keep imports at the top of these modules light (typer, pathlib); import torch, onnxruntime, faiss and the
like inside the command functions.
"""
