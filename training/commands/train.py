"""``acula train ssl`` and ``acula train align``: one TOML config per run (see configs/)."""

from __future__ import annotations

from pathlib import Path

import typer


def _overrides(items: list[str]) -> dict[str, object]:
    """``--set epochs=2 --set data.batch_size=16`` -> dotted overrides; values parsed as TOML scalars."""
    import tomllib

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # a bare string, e.g. a path
    return out


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help=(
            "Train audio encoders: self-supervised pretraining, then report alignment. "
            "Several GPUs: torchrun --nproc_per_node N $(which acula) train ssl -c configs/ssl.toml"
        )
    )
    app.add_typer(sub, name="train")

    config_opt = typer.Option(..., "--config", "-c", exists=True, dir_okay=False, help="TOML run config.")
    set_opt = typer.Option([], "--set", help="Override a config value: --set epochs=2 (repeatable).")

    @sub.command("ssl")
    def ssl_command(config: Path = config_opt, set_: list[str] = set_opt) -> None:
        """Masked spectrogram pretraining on the training-side audio of every dataset."""
        from acula.training.train.config import SSLConfig, load_config
        from acula.training.train.ssl import run_ssl

        cfg = load_config(config, SSLConfig, _overrides(set_))
        final = run_ssl(cfg)
        typer.echo(f"SSL checkpoint: {final}")

    @sub.command("align")
    def align_command(config: Path = config_opt, set_: list[str] = set_opt) -> None:
        """Align the SSL encoder to a frozen text teacher's embeddings of the training-side reports."""
        from acula.training.train.align import run_align
        from acula.training.train.config import AlignConfig, load_config

        cfg = load_config(config, AlignConfig, _overrides(set_))
        final = run_align(cfg)
        typer.echo(f"aligned checkpoint: {final}")
