"""``acula audio inspect FILE...``: what a header says, and what the project's audio module makes of it.

The command decodes through :func:`service.audio.decode_audio`, the same path as the service and training,
so "why was my upload refused?" has the same answer here as over HTTP: the error's stable code and its
message. Exit status 1 when any file fails.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from acula.service.audio import AudioLimits


def register(app: typer.Typer) -> None:
    audio = typer.Typer(help="Audio files as the project's audio module sees them.", no_args_is_help=True)
    audio.command("inspect")(inspect)
    app.add_typer(audio, name="audio")


def inspect(
    files: Annotated[list[Path], typer.Argument(help="Audio files to inspect.")],
    rate: Annotated[int, typer.Option(help="Rate to decode and resample to, in Hz.", min=1)] = 16000,
    min_seconds: Annotated[float, typer.Option(help="Refuse recordings shorter than this.", min=0)] = 0.0,
    max_seconds: Annotated[float, typer.Option(help="Refuse recordings longer than this.", min=0)] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list instead of text.")] = False,
) -> None:
    """Format, codec, channels, native rate and duration of each file, and its decode at --rate (or error)."""
    from acula.service.audio import AudioLimits

    limits = AudioLimits(min_seconds=min_seconds, max_seconds=max_seconds)
    reports = [inspect_file(path, rate, limits) for path in files]
    if as_json:
        typer.echo(json.dumps(reports, indent=2))
    else:
        for report in reports:
            typer.echo(_as_text(report))
    if any(not report["ok"] for report in reports):
        raise typer.Exit(1)


def inspect_file(path: Path, rate: int, limits: AudioLimits) -> dict[str, Any]:
    """One file's report: ``header`` (probe), ``decoded`` (at ``rate``) and ``error`` (code and message)."""
    from acula.service.audio import AudioError, decode_audio, probe_audio

    report: dict[str, Any] = {"file": str(path), "ok": False, "header": None, "decoded": None, "error": None}
    try:
        info = probe_audio(path, limits)
        report["header"] = {
            "format": info.format,
            "subtype": info.subtype,
            "channels": info.channels,
            "native_rate": info.native_rate,
            "duration_s": info.duration_s,
            "size_bytes": info.size_bytes,
            "decoder": info.decoder,
        }
        audio = decode_audio(path, rate, limits)
    except AudioError as exc:
        report["error"] = {"code": exc.code, "message": str(exc)}
        return report
    samples = audio.samples.astype("float64")
    peak = float(abs(samples).max())
    rms = math.sqrt(float((samples**2).mean()))
    report["decoded"] = {
        "rate": audio.rate,
        "samples": len(audio.samples),
        "duration_s": audio.duration_s,
        "peak": peak,
        "peak_dbfs": _dbfs(peak),
        "rms": rms,
        "rms_dbfs": _dbfs(rms),
    }
    report["ok"] = True
    return report


def _dbfs(value: float) -> float | None:
    return 20 * math.log10(value) if value > 0 else None


def _as_text(report: dict[str, Any]) -> str:
    lines = [report["file"]]
    header = report["header"]
    if header is not None:
        length = "unknown length" if header["duration_s"] is None else f"{header['duration_s']:.3f} s"
        lines.append(
            f"  header : {header['format']} {header['subtype']}, {header['channels']} channel(s), "
            f"{header['native_rate']} Hz, {length} "
            f"({header['size_bytes']:,} bytes, read by {header['decoder']})"
        )
    decoded = report["decoded"]
    if decoded is not None:
        lines.append(
            f"  decoded: {decoded['samples']} samples at {decoded['rate']} Hz, "
            f"{decoded['duration_s']:.3f} s, "
            f"peak {decoded['peak']:.4f} ({_db_text(decoded['peak_dbfs'])}), "
            f"RMS {decoded['rms']:.4f} ({_db_text(decoded['rms_dbfs'])})"
        )
    if report["error"] is not None:
        lines.append(f"  error  : {report['error']['code']}: {report['error']['message']}")
    return "\n".join(lines)


def _db_text(value: float | None) -> str:
    return "-inf dBFS" if value is None else f"{value:.1f} dBFS"
