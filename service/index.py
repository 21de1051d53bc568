"""The report index: FAISS inner-product search over the joint embeddings of the training-side reports.

Row ``i`` of the FAISS index is line ``i`` of ``reports.jsonl`` (``id``, ``text``, ``dataset``, ``labels``).
The texts are other patients' reports, so they are returned only when the manifest says the corpus is
de-identified; otherwise a hit carries its id and score alone. FAISS's OpenMP pool is sized from settings,
because by default it takes every core of the host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acula.service.bundle import BundleError, ReportIndexSpec


@dataclass(frozen=True)
class ReportHit:
    """One similar report; ``text`` is None when the corpus is not marked de-identified."""

    id: str
    score: float
    dataset: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    text: str | None = None


@dataclass(frozen=True)
class _Report:
    id: str
    text: str
    dataset: str | None
    labels: dict[str, Any]


def _labels(value: object) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {"labels": value}
    return {} if value is None else {"label": value}


class ReportIndex:
    """A loaded FAISS index with its corpus; ``search`` is thread-safe for concurrent readers."""

    def __init__(self, bundle_dir: Path, spec: ReportIndexSpec, threads: int = 1) -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        self.spec = spec
        self.show_text = spec.deidentified
        try:
            self._index = faiss.read_index(str(Path(bundle_dir) / spec.index_file))
        except RuntimeError as exc:
            raise BundleError(
                f"{spec.index_file}: FAISS cannot read it: {exc}", file=spec.index_file
            ) from exc
        self._reports = self._read_corpus(Path(bundle_dir) / spec.corpus_file)
        if self._index.d != spec.dim:
            raise BundleError(
                f"{spec.index_file}: dimension {self._index.d}, manifest says {spec.dim}",
                file=spec.index_file,
            )
        if not (self._index.ntotal == len(self._reports) == spec.count):
            raise BundleError(
                f"{spec.index_file} holds {self._index.ntotal} vectors, {spec.corpus_file} "
                f"{len(self._reports)} reports, the manifest says {spec.count}",
                file=spec.index_file,
            )

    def _read_corpus(self, path: Path) -> list[_Report]:
        reports = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                reports.append(
                    _Report(
                        str(row["id"]),
                        str(row.get("text", "")),
                        row.get("dataset"),
                        _labels(row.get("labels")),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise BundleError(
                    f"{self.spec.corpus_file} line {number}: not a report record ({exc})",
                    file=self.spec.corpus_file,
                ) from exc
        return reports

    @property
    def count(self) -> int:
        return len(self._reports)

    def search(self, vector: np.ndarray, k: int) -> list[ReportHit]:
        """The ``k`` reports closest to one L2-normalised joint embedding, best first."""
        k = min(k, self.count)
        if k <= 0:
            return []
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        scores, rows = self._index.search(query, k)
        hits = []
        for score, row in zip(scores[0], rows[0], strict=True):
            if row < 0:
                continue
            report = self._reports[int(row)]
            hits.append(
                ReportHit(
                    id=report.id,
                    score=float(score),
                    dataset=report.dataset,
                    labels=report.labels,
                    text=report.text if self.show_text else None,
                )
            )
        return hits
