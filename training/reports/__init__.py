"""Clinical reports from dataset metadata: writers (template, OpenAI-compatible LLM), validator, corpus I/O.

``load_reports(path)`` reads a ``reports.jsonl`` (one :class:`ReportRow` per line: report_id, recording_id,
dataset, split, text, facts, writer, model, prompt_hash, labels).
"""

from __future__ import annotations

from acula.training.reports.schema import (
    Report,
    ReportRow,
    ReportWriter,
    append_reports,
    iter_reports,
    load_reports,
)

__all__ = ["Report", "ReportRow", "ReportWriter", "append_reports", "iter_reports", "load_reports"]
