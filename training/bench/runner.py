"""``acula bench``: every row (feature source) x every task, probes, retrieval, zero-shot, figures, report.

Order of work, chosen for a 2-core machine: first every recording any selected task needs is turned into
features ONCE per source (cached on disk, so a rerun skips it), then all tasks read those tables. Rows are
compared on the same recordings: a recording that one source could not process is dropped for all, and the
count is reported.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acula.training.bench.evaluate import SchemeResult, evaluate_task
from acula.training.bench.features import (
    BundleEncoder,
    FeatureSource,
    FeatureTable,
    TorchEncoder,
    default_name,
    recording_key,
)
from acula.training.bench.metrics import metric_name, one_hot
from acula.training.bench.opera import OperaConfig
from acula.training.bench.tasks import Task, TaskData, get_tasks, is_test_side, task_data
from acula.training.data.records import Recording


@dataclass
class BenchConfig:
    root: Path
    out: Path
    encoders: list[str] = field(default_factory=list)  # checkpoint, bundle dir, 'opensmile'; 'name=path'
    random_init: bool = False
    tasks: list[str] | None = None
    probes: tuple[str, ...] = ("logistic",)
    reports: Path | None = None  # reports JSONL: enables retrieval (test-side reports only are read)
    cache_dir: Path | None = None
    threads: int = 2
    opera: OperaConfig = field(default_factory=OperaConfig)
    map_method: str = "tsne"  # 2-D embedding map: 'tsne' or 'pca'
    plots: bool = True
    progress: bool = True


def parse_encoder(spec: str, threads: int) -> FeatureSource:
    """``PATH`` or ``NAME=PATH``; PATH a checkpoint file, a bundle folder, or the word 'opensmile'."""
    given, _, target = spec.rpartition("=")
    name = given or None
    if target == "opensmile":
        from acula.training.bench.opensmile_features import OpenSmileSource

        return OpenSmileSource(workers=threads, name=name or "opensmile")
    path = Path(target)
    if path.is_dir():
        return BundleEncoder(path, name=name, threads=threads)
    if path.is_file():
        return TorchEncoder.from_checkpoint(path, name=name)
    raise FileNotFoundError(f"--encoder {spec}: {path} is neither a checkpoint file nor a bundle folder")


def build_sources(config: BenchConfig) -> list[FeatureSource]:
    sources = [parse_encoder(spec, config.threads) for spec in config.encoders]
    if config.random_init:
        from acula.training.nets.model import ModelConfig

        template = next((s for s in sources if isinstance(s, TorchEncoder)), None)
        model_config = template.model.config if template is not None else ModelConfig()
        sources.append(TorchEncoder.random_init(model_config, seed=0))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"two rows share a name {names}: name them with --encoder NAME=PATH")
    if not sources:
        raise ValueError("nothing to benchmark: give --encoder (a checkpoint, a bundle or 'opensmile')")
    return sources


def text_embedder(source: FeatureSource, cache_root: Path) -> Callable[[list[str]], np.ndarray] | None:
    """Texts -> the source's joint space, or None when it has no text side (SSL-only, openSMILE)."""
    embed: Callable[[list[str]], np.ndarray | None]
    if isinstance(source, BundleEncoder) and source.pipeline.text_encoder is not None:
        embed = source.embed_texts
    elif isinstance(source, TorchEncoder) and source.text_head is not None:
        from acula.training.teacher import TeacherCache, TeacherSpec, load_teacher

        spec = TeacherSpec.model_validate(source.teacher_spec) if source.teacher_spec else TeacherSpec()
        cache = TeacherCache(load_teacher(spec), cache_root / "teacher")
        torch_source = source
        embed = lambda texts: torch_source.embed_text(cache.encode(texts))  # noqa: E731
    else:
        return None

    def joint(texts: list[str]) -> np.ndarray:
        vectors = embed(texts)
        assert vectors is not None  # the source was checked to have a text side above
        return vectors

    return joint


def test_side_reports(path: Path) -> dict[str, list[str]]:
    """``dataset/recording_id`` -> report texts, for TEST-side reports only."""
    from acula.training.train.pairs import read_reports

    out: dict[str, list[str]] = {}
    for report in read_reports(path):
        get = report.get if isinstance(report, dict) else lambda k, r=report: getattr(r, k)
        if str(get("split")).startswith("test"):
            out.setdefault(f"{get('dataset')}/{get('recording_id')}", []).append(str(get("text")))
    return out


def restrict(data: TaskData, keys: set[str]) -> TaskData:
    rows = [i for i, r in enumerate(data.records) if recording_key(r) in keys]
    return TaskData(data.task, [data.records[i] for i in rows], data.y[rows], data.groups[rows])


def _scores_2d(task: Task, y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if task.kind == "binary":
        return y[:, None], scores[:, None], [task.classes[1]]
    if task.kind == "multiclass":
        return one_hot(y, len(task.classes)), scores, list(task.classes)
    return y, scores, list(task.classes)


Curves = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]  # source -> rows, scores, uncalibrated


class Runner:
    """Holds the sources, feature tables and results of one ``acula bench`` run."""

    def __init__(self, config: BenchConfig, log: Callable[[str], None] = print) -> None:
        from acula.training.train.audio_dataset import default_cache_dir

        self.config = config
        self.log = log
        self.cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        self.out = Path(config.out)
        self.timings: dict[str, float] = {}
        self.results: dict[str, Any] = {
            "tasks": {},
            "retrieval": {},
            "zero_shot": {},
            "calibration": {},
            "plots": {},
        }
        self._projections: dict[tuple, np.ndarray] = {}  # (source, recording keys) -> 2-D points

    def run(self) -> dict[str, Any]:
        import torch

        torch.set_num_threads(self.config.threads)
        started, cpu = time.perf_counter(), cpu_seconds()
        tasks = get_tasks(self.config.tasks)
        sources = build_sources(self.config)
        datas = self._task_data(tasks)
        tables = self._extract(sources, datas)
        common = set.intersection(*(set(t.keys) for t in tables.values()))
        datas = [restrict(d, common) for d in datas]
        self._evaluate(datas, sources, tables)
        if self.config.reports is not None or any(t.prompts for t in tasks):
            self._joint_space(datas, sources, tables)
        self.timings["total"] = time.perf_counter() - started
        self.timings["cpu/total"] = cpu_seconds() - cpu
        self.results["meta"] = self._meta(sources, tables, datas)
        from acula.training.bench.report import write_report

        write_report(self.out, self.results)
        return self.results

    # --- stages ---------------------------------------------------------------------------------------------
    def _task_data(self, tasks: list[Task]) -> list[TaskData]:
        from acula.training.data import load_records

        datasets = sorted({t.dataset for t in tasks})
        records: list[Recording] = load_records(self.config.root, datasets=datasets)
        return [task_data(task, records) for task in tasks]

    def _extract(self, sources: list[FeatureSource], datas: list[TaskData]) -> dict[str, FeatureTable]:
        union: dict[str, Recording] = {}
        for data in datas:
            for rec in data.records:
                union.setdefault(recording_key(rec), rec)
        records = list(union.values())
        tables = {}
        for source in sources:
            started, cpu = time.perf_counter(), cpu_seconds()
            tables[source.name] = source.extract(records, self.cache_root, self.config.progress)
            self.timings[f"features/{source.name}"] = time.perf_counter() - started
            self.timings[f"cpu/features/{source.name}"] = cpu_seconds() - cpu
            failed = tables[source.name].failed
            self.log(
                f"features {source.name}: {len(tables[source.name].keys)} recordings in "
                f"{self.timings[f'features/{source.name}']:.0f} s"
                + (f", {len(failed)} failed" if failed else "")
            )
        return tables

    def _evaluate(self, datas: list[TaskData], sources: list[FeatureSource], tables: dict[str, FeatureTable]):
        from tqdm import tqdm

        torch_threads = self.config.threads
        import torch

        torch.set_num_threads(1)  # probes are tiny: one thread beats two contended ones
        for data in tqdm(datas, desc="tasks", disable=not self.config.progress):
            started, cpu = time.perf_counter(), cpu_seconds()
            task = data.task
            entry: dict[str, Any] = {
                "dataset": task.dataset,
                "kind": task.kind,
                "metric": metric_name(task.kind),
                "description": task.description,
                "recordings": len(data.records),
                "subjects": len(set(data.groups)),
                "schemes": list(task.schemes),
                "results": {},
            }
            curves: Curves = {}
            for source in sources:
                table = tables[source.name]
                x = table.embedding[table.rows([recording_key(r) for r in data.records])]
                runs = evaluate_task(data, x, list(self.config.probes), self.config.opera)
                entry["results"][source.name] = {
                    probe: {scheme: res.summary() for scheme, res in schemes.items()}
                    for probe, schemes in runs.items()
                }
                first: SchemeResult = next(iter(runs[self.config.probes[0]].values()))
                curves[source.name] = (first.rows, first.scores, first.uncalibrated)
                if self.config.plots:
                    self._map(data, source.name, x)
            if task.kind != "regression":
                self._calibration(data, curves)
                if self.config.plots:
                    self._roc(data, curves)
                    self._reliability(data, curves)
            self.results["tasks"][task.name] = entry
            self.timings[f"task/{task.name}"] = time.perf_counter() - started
            self.timings[f"cpu/task/{task.name}"] = cpu_seconds() - cpu
        torch.set_num_threads(torch_threads)

    def _calibration(self, data: TaskData, curves: Curves) -> None:
        """Expected calibration error of the first probe's pooled test-side answers, before and after."""
        from acula.training.bench.metrics import expected_calibration_error

        for source, (rows, scores, raw) in curves.items():
            entry = {"ece": expected_calibration_error(data.task.kind, data.y[rows], scores)}
            if raw is not None:
                entry["ece_before_calibration"] = expected_calibration_error(
                    data.task.kind, data.y[rows], raw
                )
            self.results["calibration"].setdefault(data.task.name, {})[source] = entry

    def _reliability(self, data: TaskData, curves: Curves) -> None:
        from acula.training.bench.plots import reliability_figure

        task = data.task
        prepared = {source: (data.y[rows], scores, raw) for source, (rows, scores, raw) in curves.items()}
        title = f"{task.name} ({self.config.probes[0]} probe, test side)"
        path = reliability_figure(
            self.out / "plots" / f"reliability-{task.name}.png", title, prepared, task.kind
        )
        self.results["plots"].setdefault(task.name, []).append(str(path.relative_to(self.out)))

    def _roc(self, data: TaskData, curves: Curves) -> None:
        from acula.training.bench.plots import roc_figure

        task = data.task
        prepared: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        names: list[str] = []
        for source, (rows, scores, _) in curves.items():
            y2, s2, names = _scores_2d(task, data.y[rows], scores)
            prepared[source] = (y2, s2)
        title = f"{task.name} ({self.config.probes[0]} probe, test side)"
        path = roc_figure(self.out / "plots" / f"roc-{task.name}.png", title, names, prepared)
        self.results["plots"].setdefault(task.name, []).append(str(path.relative_to(self.out)))

    def _map(self, data: TaskData, source: str, x: np.ndarray) -> None:
        from acula.training.bench.plots import embedding_map, project_2d

        task = data.task
        rows = np.asarray([i for i, r in enumerate(data.records) if is_test_side(r)], dtype=int)
        if len(rows) < 5:
            return
        key = (source, tuple(recording_key(data.records[i]) for i in rows))  # same recordings, same map
        if key not in self._projections:
            self._projections[key] = project_2d(x[rows], self.config.map_method)
        points = self._projections[key]
        labels = data.y[rows] if task.kind == "regression" else [task.label_text(v) for v in data.y[rows]]
        title = f"{source}: {task.name}, test side ({self.config.map_method})"
        path = embedding_map(self.out / "plots" / f"map-{task.name}-{source}.png", title, points, labels)
        self.results["plots"].setdefault(task.name, []).append(str(path.relative_to(self.out)))

    def _joint_space(
        self, datas: list[TaskData], sources: list[FeatureSource], tables: dict[str, FeatureTable]
    ):
        from acula.training.bench.retrieval import build_gallery, retrieval_metrics, zero_shot_auroc

        reports = test_side_reports(self.config.reports) if self.config.reports is not None else {}
        for source in sources:
            table = tables[source.name]
            embed = text_embedder(source, self.cache_root) if table.joint is not None else None
            if embed is None:
                continue
            for data in datas:
                task = data.task
                if task.kind == "regression":
                    continue
                rows = [i for i, r in enumerate(data.records) if is_test_side(r)]
                keys = [recording_key(data.records[i]) for i in rows]
                joint = table.joint[table.rows(keys)]  # type: ignore[index]
                if task.prompts:
                    auroc = zero_shot_auroc(task.kind, data.y[rows], joint, embed(list(task.prompts)))
                    self.results["zero_shot"].setdefault(task.name, {})[source.name] = auroc
                with_reports = [j for j, k in enumerate(keys) if k in reports]
                if not with_reports:
                    continue
                labels = [task.label_text(data.y[rows[j]]) for j in with_reports]
                gallery = build_gallery([reports[keys[j]] for j in with_reports], labels)
                metrics = retrieval_metrics(joint[with_reports], embed(gallery.texts), gallery, labels)
                self.results["retrieval"].setdefault(task.name, {})[source.name] = metrics

    def _meta(self, sources, tables, datas) -> dict[str, Any]:
        rows = {}
        for source in sources:
            row: dict[str, Any] = {
                "key": source.key,
                "type": type(source).__name__,
                "has_joint": source.has_joint,
            }
            contract = getattr(source, "contract", None)
            if contract is not None:
                row["audio_contract"] = json.loads(contract.model_dump_json())
            table = tables[source.name]
            row["recordings"] = len(table.keys)
            row["failed"] = dict(list(table.failed.items())[:20])
            row["failed_count"] = len(table.failed)
            rows[source.name] = row
        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "root": str(self.config.root),
            "encoders": rows,
            "probes": list(self.config.probes),
            "opera": {k: v for k, v in vars(self.config.opera).items()},
            "tasks": [d.task.name for d in datas],
            "reports": str(self.config.reports) if self.config.reports else None,
            "threads": self.config.threads,
            "machine": f"{platform.machine()} {platform.processor() or ''} ".strip()
            + f", {_cpu_count()} CPU(s) visible, torch threads {self.config.threads}",
            "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
        }


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (openSMILE workers): comparable across runs on a
    shared machine, where wall-clock time mostly measures the neighbours."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_bench(config: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    return Runner(config, log).run()


__all__ = ["BenchConfig", "Runner", "default_name", "run_bench"]
