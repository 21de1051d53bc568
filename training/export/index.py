"""The bundle's report corpus and its FAISS index.

The service returns these texts to other users, so only training-side reports go in, and each must pass
the identifying-information check: one failure refuses the whole export (a corpus that is "mostly"
de-identified is not de-identified). Row ``i`` of the index is line ``i`` of ``reports.jsonl``.

Exact inner-product search (``IndexFlatIP``) is the default: a few thousand vectors search in well under a
millisecond. HNSW and IVF are options for large corpora; their recall@10 against exact search is measured
on the corpus itself and written into the manifest, so nobody ships an approximate index blind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from acula.service.bundle import ReportIndexSpec
from acula.service.core.windowing import l2_normalise
from acula.training.data.records import Recording

IndexKind = Literal["flat", "hnsw", "ivf"]


class CorpusRefused(ValueError):
    """A report may not be shipped: it is test-side, or it failed the identifying-information check."""


def corpus_rows(reports: Iterable[dict[str, Any]], check: Callable[[str], list[str]]) -> list[dict[str, Any]]:
    """Training-side reports as bundle corpus rows (id, recording_id, dataset, text, labels, facts).

    The caller drops test-side reports first; one reaching this point is a bug and refuses the export.
    Raises :class:`CorpusRefused` naming the reports (never their text) that fail ``check``.
    """
    rows, failures = [], []
    for report in reports:
        if report.get("split") != "train":
            raise CorpusRefused(
                f"report {report.get('report_id')} is from split {report.get('split')!r}: "
                "only training-side reports may go into a bundle"
            )
        problems = check(str(report["text"]))
        if problems:
            failures.append(f"{report['report_id']}: {'; '.join(problems)}")
            continue
        rows.append(
            {
                "id": str(report["report_id"]),
                "recording_id": str(report["recording_id"]),
                "dataset": report.get("dataset"),
                "text": str(report["text"]),
                "labels": report.get("labels") or {},
                "facts": report.get("facts") or {},
                "writer": report.get("writer"),
            }
        )
    if failures:
        shown = "\n  ".join(failures[:10])
        raise CorpusRefused(
            f"{len(failures)} report(s) failed the identifying-information check; export refused:\n  {shown}"
        )
    return rows


def training_side_corpus(
    reports: Sequence[dict[str, Any]], records: Sequence[Recording], check: Callable[[str], list[str]]
) -> tuple[list[dict[str, Any]], int]:
    """Corpus rows of the reports written for training-side recordings, and how many others were left out."""
    training_side = {(r.dataset, r.recording_id) for r in records if r.is_training_side}
    kept = [
        r for r in reports if r.get("split") == "train" and (r["dataset"], r["recording_id"]) in training_side
    ]
    return corpus_rows(kept, check), len(reports) - len(kept)


def text_source(rows: list[dict[str, Any]]) -> Literal["template", "llm", "mixed"]:
    """Who wrote the corpus: the template writer only, an LLM only, or both."""
    writers = {str(row.get("writer") or "template") for row in rows}
    if writers <= {"template"}:
        return "template"
    return "llm" if "template" not in writers else "mixed"


def report_vectors(
    model: Any, rows: list[dict[str, Any]], teacher: Any, cache_dir: Path | None
) -> np.ndarray:
    """Joint-space vectors of the report texts: frozen teacher (cached on disk) -> the model's text head."""
    import torch

    from acula.training.teacher import TeacherCache
    from acula.training.train.audio_dataset import default_cache_dir

    cache = TeacherCache(teacher, (cache_dir or default_cache_dir()) / "teacher")
    hidden = cache.encode([row["text"] for row in rows])
    with torch.no_grad():
        joint = model.encode_text(torch.from_numpy(hidden)).numpy()
    return l2_normalise(joint)


def write_report_index(
    rows: list[dict[str, Any]], vectors: np.ndarray, kind: IndexKind, out_dir: Path
) -> ReportIndexSpec:
    """``reports.faiss`` and ``reports.jsonl`` into ``out_dir``: row ``i`` of the index is line ``i``."""
    index, recall = build_index(vectors, kind)
    write_index(index, Path(out_dir) / "reports.faiss")
    write_corpus(rows, Path(out_dir) / "reports.jsonl")
    return ReportIndexSpec(
        count=len(rows),
        dim=int(vectors.shape[1]),
        kind=kind,
        recall_at_10_vs_exact=recall,
        deidentified=True,  # corpus_rows refuses the export otherwise
        text_source=text_source(rows),
    )


def write_corpus(rows: list[dict[str, Any]], path: Path) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def _exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    return exact.search(queries, k)[1]


def recall_at_k(index: Any, vectors: np.ndarray, k: int = 10, queries: int = 500, seed: int = 0) -> float:
    """Mean overlap between the index's top ``k`` and exact search's, over corpus vectors used as queries."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False)
    q = np.ascontiguousarray(vectors[rows])
    k = min(k, len(vectors))
    truth = _exact_top(vectors, q, k)
    found = index.search(q, k)[1]
    hits = [len(set(t) & set(f)) / k for t, f in zip(truth.tolist(), found.tolist(), strict=True)]
    return float(np.mean(hits))


def build_index(vectors: np.ndarray, kind: IndexKind = "flat", threads: int = 1) -> tuple[Any, float | None]:
    """A FAISS inner-product index of L2-normalised ``vectors``, and recall@10 vs exact (None for flat)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"need a non-empty (n, dim) array of report embeddings, got {vectors.shape}")
    dim = vectors.shape[1]
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    elif kind == "ivf":
        nlist = max(1, min(int(np.sqrt(len(vectors))), len(vectors) // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = max(1, nlist // 4)
    else:
        raise ValueError(f"unknown index kind {kind!r}: use flat, hnsw or ivf")
    index.add(vectors)
    recall = None if kind == "flat" else recall_at_k(index, vectors)
    return index, recall


def write_index(index: Any, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))
