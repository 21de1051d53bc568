"""One task, one feature matrix, one probe: train on each split, score every evaluated subset.

Numbers per split scheme (see :mod:`training.bench.tasks`):

- ``value``: official -> the metric on all test recordings; cross-validation and leave-one-source-out -> the
  mean over splits. For the OPERA probe, each seed gives one such value and ``value`` is their mean.
- ``std``: OPERA -> standard deviation over seeds; logistic -> over splits (None for a single split).
- ``pooled``: the metric of all splits' predictions concatenated (every test-side recording is predicted
  exactly once per scheme), which does not let small folds weigh as much as large ones.
- ``subsets``: per evaluated subset (SPRSound's ``test-intra`` and ``test-inter``), the mean over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from acula.training.bench.metrics import score_task
from acula.training.bench.opera import OperaConfig, opera_probe
from acula.training.bench.tasks import EvalSplit, TaskData
from acula.training.probes import ProbeOutput, linear_probe

DEFAULT_OPERA = OperaConfig()


@dataclass
class SchemeResult:
    probe: str
    scheme: str
    value: float
    std: float | None
    pooled: float
    per_split: dict[str, float]
    subsets: dict[str, float]
    seeds: list[float] = field(default_factory=list)
    n_eval: int = 0
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))  # pooled evaluated rows
    scores: np.ndarray = field(default_factory=lambda: np.empty(0))  # their scores (first seed for opera)
    uncalibrated: np.ndarray | None = None  # the same rows before calibration (calibrated probes)

    def summary(self) -> dict[str, object]:
        """JSON-ready numbers (no arrays)."""
        return {
            "value": self.value,
            "std": self.std,
            "pooled": self.pooled,
            "per_split": self.per_split,
            "subsets": self.subsets,
            "seeds": self.seeds,
            "n_eval": self.n_eval,
        }


def _run_probe(
    probe: str, data: TaskData, split: EvalSplit, x: np.ndarray, opera: OperaConfig
) -> list[ProbeOutput]:
    train, evaluate = split.train, split.evaluate["all"]
    task = data.task
    args = (x[train], data.y[train], data.groups[train], x[evaluate], task.kind, task.num_outputs)
    if probe == "logistic":
        return [linear_probe(*args)]
    if probe == "opera":
        return opera_probe(*args, config=opera)
    raise ValueError(f"unknown probe {probe!r}: use 'logistic' or 'opera'")


def _nan_mean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate_scheme(
    data: TaskData, splits: list[EvalSplit], x: np.ndarray, probe: str, opera: OperaConfig = DEFAULT_OPERA
) -> SchemeResult:
    """Train ``probe`` on every split of ONE scheme and summarise (see the module docstring)."""
    kind = data.task.kind
    per_seed_split: list[dict[str, float]] = []  # seed -> split -> metric
    per_seed_subsets: list[dict[str, float]] = []  # seed -> subset -> metric (single-split schemes)
    pooled_rows: list[np.ndarray] = []
    pooled_scores: list[list[np.ndarray]] = []  # split -> seed -> scores
    uncalibrated: list[np.ndarray | None] = []  # split -> first seed's scores before calibration
    for split in splits:
        outputs = _run_probe(probe, data, split, x, opera)
        rows = split.evaluate["all"]
        pooled_rows.append(rows)
        pooled_scores.append([o.scores for o in outputs])
        uncalibrated.append(outputs[0].uncalibrated)
        position = {r: i for i, r in enumerate(rows)}
        for s, output in enumerate(outputs):
            if len(per_seed_split) <= s:
                per_seed_split.append({})
                per_seed_subsets.append({})
            per_seed_split[s][split.name] = score_task(kind, data.y[rows], output.scores)
            for subset, subset_rows in split.evaluate.items():
                pick = np.asarray([position[r] for r in subset_rows], dtype=int)
                name = subset if len(splits) == 1 else f"{split.name}/{subset}"
                per_seed_subsets[s][name] = score_task(kind, data.y[subset_rows], output.scores[pick])
    seeds = [_nan_mean(list(by_split.values())) for by_split in per_seed_split]
    all_rows = np.concatenate(pooled_rows)
    pooled_per_seed = [
        score_task(kind, data.y[all_rows], np.concatenate([scores[s] for scores in pooled_scores]))
        for s in range(len(seeds))
    ]
    raw = [scores for scores in uncalibrated if scores is not None]
    split_names = [split.name for split in splits]
    per_split = {name: _nan_mean([seed[name] for seed in per_seed_split]) for name in split_names}
    subsets = {name: _nan_mean([seed[name] for seed in per_seed_subsets]) for name in per_seed_subsets[0]}
    if probe == "opera":
        std = float(np.std(seeds)) if len(seeds) > 1 else None
    else:
        std = float(np.nanstd(list(per_split.values()))) if len(per_split) > 1 else None
    return SchemeResult(
        probe=probe,
        scheme=splits[0].scheme,
        value=_nan_mean(seeds),
        std=std,
        pooled=_nan_mean(pooled_per_seed),
        per_split=per_split,
        subsets=subsets,
        seeds=seeds if probe == "opera" else [],
        n_eval=len(all_rows),
        rows=all_rows,
        scores=np.concatenate([scores[0] for scores in pooled_scores]),
        uncalibrated=np.concatenate(raw) if len(raw) == len(uncalibrated) else None,
    )


def evaluate_task(
    data: TaskData, x: np.ndarray, probes: list[str], opera: OperaConfig = DEFAULT_OPERA
) -> dict[str, dict[str, SchemeResult]]:
    """``{probe: {scheme: SchemeResult}}`` for every scheme the task declares."""
    splits = data.splits()
    by_scheme: dict[str, list[EvalSplit]] = {}
    for split in splits:
        by_scheme.setdefault(split.scheme, []).append(split)
    return {
        probe: {scheme: evaluate_scheme(data, group, x, probe, opera) for scheme, group in by_scheme.items()}
        for probe in probes
    }
