"""Writing a report corpus: records in, validated reports appended to a JSONL file, resumable.

A rerun skips every recording whose report id is already in the output (so an interrupted LLM run resumes
where it stopped), and the summary counts each rejection reason, so a user sees what the validator caught.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from acula.training.data.records import Recording
from acula.training.reports.schema import Report, ReportRow, ReportWriter, append_reports, iter_reports
from acula.training.reports.validator import validate


@dataclass
class BuildSummary:
    written: int = 0
    already_present: int = 0
    rejected: int = 0
    fallbacks: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def _existing_ids(path: Path) -> set[str]:
    return {row.report_id for row in iter_reports(path)} if path.is_file() else set()


LLM_CACHE = Path(".acula-cache/llm")


def make_writer(
    backend: str, seed: int = 0, cache_dir: Path = LLM_CACHE, concurrency: int = 4
) -> ReportWriter:
    """The writer named ``backend``: ``template`` (offline), or ``openai`` configured from ACULA_LLM_*
    (falling back to the template writer per report). Raises ValueError for an unknown or unconfigured one."""
    from acula.training.reports.template import TemplateWriter

    template = TemplateWriter(seed)
    if backend == "template":
        return template
    if backend == "openai":
        from acula.training.reports.openai_writer import OpenAIWriter

        return OpenAIWriter.from_env(fallback=template, cache_dir=cache_dir, concurrency=concurrency)
    raise ValueError(f"unknown backend {backend!r}: use template or openai")


def build_reports(
    records: Sequence[Recording],
    writer: ReportWriter,
    out: Path,
    on_progress: Callable[[int], None] | None = None,
    batch_size: int = 64,
) -> BuildSummary:
    """Write one report per record to ``out`` (appending; existing report ids are kept, not rewritten)."""
    summary = BuildSummary()
    done = _existing_ids(out)
    todo = [r for r in records if f"{r.dataset}:{r.recording_id}:0" not in done]
    summary.already_present = len(records) - len(todo)
    if on_progress and summary.already_present:
        on_progress(summary.already_present)
    write_many = getattr(writer, "write_many", None)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        reports: Iterable[Report] = write_many(batch) if write_many else [writer.write(r) for r in batch]
        rows = []
        for record, report in zip(batch, reports, strict=True):
            if report.fallback_reasons:
                summary.fallbacks += 1
                summary.reasons.update(report.fallback_reasons)
            reasons = validate(report.text, record)
            if reasons:  # a writer must never hand back text that fails (the LLM writer falls back first)
                summary.rejected += 1
                summary.reasons.update(reasons)
                continue
            rows.append(ReportRow.from_report(record, report))
        append_reports(out, rows)
        summary.written += len(rows)
        if on_progress:
            on_progress(len(batch))
    return summary


WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*|\d+(?:\.\d+)?")
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def corpus_stats(rows: Iterable[ReportRow]) -> dict[str, object]:
    """Reports, distinct texts and sentences, vocabulary size (lower-cased words), counts per dataset."""
    texts: list[str] = []
    sentences: set[str] = set()
    vocabulary: set[str] = set()
    per_dataset: Counter[str] = Counter()
    per_writer: Counter[str] = Counter()
    words = 0
    for row in rows:
        texts.append(row.text)
        per_dataset[row.dataset] += 1
        per_writer[row.writer] += 1
        sentences.update(s.strip() for s in SENTENCE.split(row.text) if s.strip())
        tokens = WORD.findall(row.text.lower())
        words += len(tokens)
        vocabulary.update(tokens)
    return {
        "reports": len(texts),
        "distinct_reports": len(set(texts)),
        "distinct_sentences": len(sentences),
        "vocabulary_size": len(vocabulary),
        "mean_words_per_report": round(words / max(1, len(texts)), 1),
        "per_dataset": dict(sorted(per_dataset.items())),
        "per_writer": dict(sorted(per_writer.items())),
    }
