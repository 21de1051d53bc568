"""Recording-report pairs for alignment and its retrieval check.

Reports come from ``training.reports.load_reports`` (one JSON object per line: report_id, recording_id,
dataset, split, text, ...). A recording may have several reports (several writers); texts are
de-duplicated into one table, and a pair refers to its text by index, so identical texts share one index
(which is also the ``text_id`` that keeps them from being each other's negatives, see ``training.losses``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acula.training.data.records import Recording
from acula.training.train.audio_dataset import AudioCache, CropDataset, LogMelCache


def _field(report: Any, name: str) -> Any:
    return report[name] if isinstance(report, dict) else getattr(report, name)


def read_reports(path: Path) -> list[Any]:
    """Reports as validated records (``acula.training.reports.load_reports``)."""
    from acula.training.reports import load_reports

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reports file {path} does not exist: write it with `acula reports build`")
    return list(load_reports(path))


@dataclass
class Pairs:
    """Recordings with at least one report, the report texts of each (indices into ``texts``)."""

    records: list[Recording]
    text_indices: list[list[int]]
    texts: list[str]

    def keep(self, records: list[Recording]) -> Pairs:
        """The pairs of ``records`` only (a subset of ``self.records``), texts table unchanged."""
        wanted = {id(r) for r in records}
        rows = [i for i, r in enumerate(self.records) if id(r) in wanted]
        return Pairs([self.records[i] for i in rows], [self.text_indices[i] for i in rows], self.texts)


def build_pairs(records: list[Recording], reports: list[Any], side: str) -> Pairs:
    """Join records and reports for one side: ``"train"`` (training-side only) or ``"test"`` (held out).

    On the training side a pair needs BOTH the recording and the report marked training-side, so a report
    written from a test recording's metadata can never reach the trainer even if the record were mislabelled.
    """
    if side not in ("train", "test"):
        raise ValueError(f"side must be 'train' or 'test', got {side!r}")
    by_key: dict[tuple[str, str], list[str]] = {}
    for report in reports:
        split = str(_field(report, "split"))
        if (side == "train") != (split == "train"):
            continue
        key = (str(_field(report, "dataset")), str(_field(report, "recording_id")))
        by_key.setdefault(key, []).append(str(_field(report, "text")))
    texts: list[str] = []
    index: dict[str, int] = {}
    out_records, out_indices = [], []
    for rec in records:
        if rec.audio_path is None:
            continue
        if side == "train" and not rec.is_training_side:
            continue
        if side == "test" and not rec.split.startswith("test"):
            continue
        own = by_key.get((rec.dataset, rec.recording_id))
        if not own:
            continue
        for text in own:
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
        ids = sorted({index[text] for text in own})
        out_records.append(rec)
        out_indices.append(ids)
    return Pairs(out_records, out_indices, texts)


class PairDataset(CropDataset):
    """Item ``i`` -> ``(crop (S,), text index)``: a random window and one of the recording's report texts."""

    def __init__(
        self,
        pairs: Pairs,
        cache: AudioCache | LogMelCache,
        window_samples: int,
        crops: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(pairs.records, cache, window_samples, crops, seed)
        self.text_indices = pairs.text_indices

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        crop, rec_index = super().__getitem__(index)
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        options = self.text_indices[rec_index]
        return crop, options[int(rng.integers(len(options)))]
