"""``acula pipeline``: start encoder, reports -> alignment -> probes + export -> benchmark, in one command.

The encoder alignment starts from is either a pretrained one (``start = "pretrained"``: the weights that
``model`` names, saved as a checkpoint) or one pre-trained here by masked-spectrogram modelling
(``start = "ssl"``). Every stage writes its result under the work dir (``<work_dir>/reports.jsonl``,
``pretrained/final.pt`` or ``ssl/final.pt``, ``align/final.pt``, the bundle, ``bench/results.json``) and is
skipped when that result already exists, so an interrupted run continues where it stopped (the training
stages additionally resume from their own ``last.pt``). Delete a stage's output to redo it and everything
after it that reads it.

The run is sized for 2 CPU cores and 90 minutes by ``configs/default.toml``; ``threads`` pins torch's pool so
a shared machine is not oversubscribed.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acula.training.export.index import IndexKind
from acula.training.nets.efficientat import DEFAULT_WEIGHTS, MobileNetConfig
from acula.training.nets.model import ModelConfig
from acula.training.train.config import AlignConfig, SSLConfig


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportsStage(_Base):
    writer: str = Field("template", description="Report writer; 'template' needs no network and no key.")


class ExportStage(_Base):
    index: IndexKind = Field("flat", description="flat (exact) | hnsw | ivf (recall measured and recorded).")
    text_side: bool = Field(True, description="Export the int8 text encoder + tokenizer into the bundle.")
    parity_tolerance: float = Field(
        1e-4, gt=0, description="Export fails when onnxruntime and torch differ by more than this."
    )
    sound_type: bool = Field(
        True, description="Fit the sound-type classifier (heart, lung, ... not auscultation)."
    )
    out_of_distribution: bool = Field(
        True, description="Write the out-of-distribution reference and threshold."
    )


class BenchStage(_Base):
    enabled: bool = True
    baselines: list[str] = Field(
        default_factory=lambda: ["opensmile", "start"],
        description="Rows compared with the aligned model: 'start' (the encoder before alignment), "
        "'opensmile'.",
    )


class PipelineConfig(_Base):
    """``configs/default.toml``: the whole default model, one file."""

    name: str = Field("acula-default", description="Bundle name (the folder name of --out by default).")
    version: str = "0.1.0"
    work_dir: Path = Field(Path("runs/default"), description="Intermediate outputs; resumable.")
    threads: int = Field(2, ge=1, description="torch and onnxruntime CPU threads.")
    cache_dir: Path | None = Field(None, description="Audio/teacher cache; None = $ACULA_CACHE or ~/.cache.")
    datasets: list[str] | None = Field(None, description="Dataset keys; None = every dataset found.")
    notes: str = Field("", description="Differences from the full default, copied into the model card.")
    start: Literal["pretrained", "ssl"] = Field(
        "pretrained", description="pretrained: align the encoder `model` names; ssl: pre-train one first."
    )
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(
            encoder="mobilenet", mobilenet=MobileNetConfig(pretrained=DEFAULT_WEIGHTS)
        ),
        description="The pretrained encoder (start = pretrained), with its audio contract.",
    )
    reports: ReportsStage = Field(default_factory=ReportsStage)
    ssl: SSLConfig = Field(default_factory=SSLConfig, description="Used when start = ssl.")
    align: AlignConfig = Field(default_factory=AlignConfig)
    export: ExportStage = Field(default_factory=ExportStage)
    bench: BenchStage = Field(default_factory=BenchStage)


def load_pipeline_config(path: Path, overrides: dict[str, object] | None = None) -> PipelineConfig:
    """Read the TOML; ``overrides`` (dotted keys, e.g. ``{"ssl.epochs": 1}``) replace values first."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline config {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
        for dotted, value in (overrides or {}).items():
            node = raw
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return PipelineConfig.model_validate(raw)
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValueError(f"{path} is not a valid pipeline config:\n{exc}") from exc


def start_checkpoint(config: PipelineConfig) -> Path:
    """The checkpoint alignment starts from (and the benchmark's 'start' row reads)."""
    return config.work_dir / config.start / "final.pt"


def resolve(config: PipelineConfig, root: Path) -> PipelineConfig:
    """Point every stage at ``root``, the work dir and one another (start -> align -> export)."""
    work = config.work_dir
    data = {"root": Path(root), "datasets": config.datasets, "cache_dir": config.cache_dir}
    ssl = config.ssl.model_copy(
        update={
            "out_dir": work / "ssl",
            "threads": config.threads,
            "data": config.ssl.data.model_copy(update=data),
        }
    )
    align = config.align.model_copy(
        update={
            "out_dir": work / "align",
            "threads": config.threads,
            "init_checkpoint": start_checkpoint(config),
            "reports": work / "reports.jsonl",
            "data": config.align.data.model_copy(update=data),
        }
    )
    return config.model_copy(update={"ssl": ssl, "align": align})


@dataclass
class Stage:
    """One step; ``done`` is its output, whose existence means the step need not run again."""

    name: str
    done: Path
    run: Callable[[], Any]


class Progress:
    """Stage-level progress on the console (the training stages draw their own step bars)."""

    def __init__(self, stages: list[Stage], log_file: Path | None = None) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.stages = stages
        self.started = time.perf_counter()
        self.log_file = log_file
        self.timings: dict[str, float] = {}

    def line(self, text: str) -> None:
        from rich.text import Text

        elapsed = time.perf_counter() - self.started
        self.console.print(f"[dim]{elapsed / 60:5.1f} min[/dim] {text}")
        if self.log_file is not None:
            with self.log_file.open("a") as handle:
                handle.write(f"{elapsed:8.1f}s {Text.from_markup(text).plain}\n")

    def run(self) -> dict[str, float]:
        for number, stage in enumerate(self.stages, start=1):
            head = f"[bold]stage {number}/{len(self.stages)}: {stage.name}[/bold]"
            if stage.done.exists():
                self.line(f"{head} [green]already done[/green] ({stage.done})")
                continue
            self.line(f"{head} ...")
            began = time.perf_counter()
            stage.run()
            if not stage.done.exists():
                raise RuntimeError(f"stage {stage.name} finished but did not write {stage.done}")
            self.timings[stage.name] = time.perf_counter() - began
            self.line(
                f"{head} [green]done[/green] in {self.timings[stage.name] / 60:.1f} min -> {stage.done}"
            )
        total = (time.perf_counter() - self.started) / 60
        self.line(f"[bold green]pipeline finished[/bold green] in {total:.1f} min")
        return self.timings


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def _export(config: PipelineConfig, root: Path, out: Path, log: Callable[[str], None]) -> None:
    from acula.training.export import ExportOptions, export_bundle
    from acula.training.export.inputs import gather

    work = config.work_dir
    inputs = gather(root, work / "reports.jsonl", config.datasets)
    options = ExportOptions(
        checkpoint=work / "align" / "final.pt",
        out=out,
        reports=work / "reports.jsonl",
        root=root,
        index_kind=config.export.index,
        name=config.name,
        version=config.version,
        text_side=config.export.text_side,
        parity_tolerance=config.export.parity_tolerance,
        sound_type=config.export.sound_type,
        out_of_distribution=config.export.out_of_distribution,
        cache_dir=config.cache_dir,
        configs=json.loads(config.model_dump_json()),
        extra_card={"differences_from_default": _differences(config)},
    )
    result = export_bundle(
        options, inputs.records, inputs.tasks, inputs.reports, inputs.check, inputs.licences, log
    )
    write_json(
        work / "export.json",
        {
            "bundle": str(out),
            "size_bytes": result.size_bytes,
            "parity_max_abs_diff": result.parity_max_abs_diff,
            "timings_s": result.timings_s,
            "notes": result.notes,
        },
    )


def _differences(config: PipelineConfig) -> str:
    if not config.notes.strip():
        return ""
    return f"\n## Differences from the full default run\n{config.notes.strip()}\n"


def _benchmark(config: PipelineConfig, root: Path, out: Path, log: Callable[[str], None]) -> None:
    """What ``acula bench`` runs: the bundle against its encoder before alignment and openSMILE (logistic
    probe, retrieval)."""
    from acula.training.bench.runner import BenchConfig, run_bench

    work = config.work_dir
    encoders = [f"aligned={out}"]
    if "start" in config.bench.baselines:
        name = "frozen-pretrained" if config.start == "pretrained" else "ssl-only"
        encoders.append(f"{name}={start_checkpoint(config)}")
    if "opensmile" in config.bench.baselines:
        encoders.append("opensmile")
    bench = BenchConfig(
        root=root,
        out=work / "bench",
        encoders=encoders,
        reports=work / "reports.jsonl",
        cache_dir=config.cache_dir,
        threads=config.threads,
    )
    run_bench(bench, log=log)


def _build_reports(config: PipelineConfig, root: Path, log: Callable[[str], None]) -> None:
    """What ``acula reports build`` runs, into a partial file renamed when complete (a crash never looks
    finished)."""
    from acula.training.data import load_records
    from acula.training.reports.build import build_reports, make_writer

    partial = config.work_dir / "reports.partial.jsonl"
    summary = build_reports(load_records(root, config.datasets), make_writer(config.reports.writer), partial)
    log(f"reports: {summary.written} written, {summary.fallbacks} fell back to the template")
    partial.replace(config.work_dir / "reports.jsonl")


def _update_card(config: PipelineConfig, out: Path) -> None:
    """Put the benchmark table into MODEL_CARD.md and re-hash the bundle."""
    from acula.service.bundle import load_manifest, write_manifest
    from acula.training.export.card import write_model_card

    manifest = load_manifest(out)
    notes = json.loads((out / "export_notes.json").read_text())
    table = config.work_dir / "bench" / "results.md"
    bench = table.read_text() if table.is_file() else ""
    write_model_card(
        out / "MODEL_CARD.md",
        manifest,
        notes | {"benchmark_markdown": bench, "differences_from_default": _differences(config)},
    )
    write_manifest(out, manifest, extra_files=sorted(set(manifest.files) - set(manifest.named_files())))
    write_json(config.work_dir / "card.json", {"benchmark_included": bool(bench)})


def _save_pretrained(config: PipelineConfig) -> None:
    """The pretrained encoder as a checkpoint (weights checked against their SHA-256), with its contract."""
    from acula.training.nets.factory import build_model, save_checkpoint

    save_checkpoint(start_checkpoint(config), build_model(config.model).eval(), stage="pretrained")


def build_stages(config: PipelineConfig, root: Path, out: Path, log: Callable[[str], None]) -> list[Stage]:
    from acula.training.train.align import run_align
    from acula.training.train.ssl import run_ssl

    work = config.work_dir

    def start() -> None:
        if config.start == "ssl":
            run_ssl(config.ssl)
        else:
            _save_pretrained(config)

    stages = [  # the start reads no report, so it runs first: a missing report writer does not hold it up
        Stage(config.start, start_checkpoint(config), start),
        Stage("reports", work / "reports.jsonl", lambda: _build_reports(config, root, log)),
        Stage("align", work / "align" / "final.pt", lambda: run_align(config.align)),
        Stage("probes + export", work / "export.json", lambda: _export(config, root, out, log)),
    ]
    if config.bench.enabled:
        stages.append(
            Stage("benchmark", work / "bench" / "results.json", lambda: _benchmark(config, root, out, log))
        )
    stages.append(Stage("model card", work / "card.json", lambda: _update_card(config, out)))
    return stages


def run_pipeline(config: PipelineConfig, root: Path, out: Path) -> dict[str, float]:
    """Run (or resume) every stage; returns the seconds each stage that ran took."""
    import torch

    torch.set_num_threads(config.threads)
    config = resolve(config, root)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    write_json(config.work_dir / "pipeline_config.json", json.loads(config.model_dump_json()))
    progress = Progress([], log_file=config.work_dir / "pipeline.log")
    progress.stages = build_stages(config, Path(root), Path(out), progress.line)
    timings = progress.run()
    write_json(config.work_dir / "timings.json", timings)
    return timings
