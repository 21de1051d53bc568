"""The report types: what a writer returns and what one line of ``reports.jsonl`` holds."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from acula.training.data.records import Recording


class Report(BaseModel):
    """A writer's output: the text and the normalised facts it states (e.g. 'finding:wheeze')."""

    model_config = ConfigDict(frozen=True)
    text: str
    facts: list[str]
    writer: str = "template"
    model: str = "template-v1"
    prompt: str | None = Field(None, description="The prompt that produced it (LLM writers).")
    prompt_hash: str = ""
    fallback_reasons: list[str] = Field(default_factory=list, description="Why an LLM text was replaced.")


class ReportWriter(Protocol):
    """Metadata record in, report out. ``name`` identifies the writer in the JSONL."""

    name: str

    def write(self, record: Recording) -> Report: ...


class ReportRow(BaseModel):
    """One line of reports.jsonl (the trainer, the benchmark and export read these keys)."""

    model_config = ConfigDict(extra="ignore")
    report_id: str
    recording_id: str
    dataset: str
    split: str
    text: str
    facts: list[str]
    writer: str
    model: str
    prompt_hash: str
    labels: dict[str, str | float | bool | list[str] | None] = Field(default_factory=dict)
    prompt: str | None = None
    fallback_reasons: list[str] = Field(default_factory=list)

    @classmethod
    def from_report(cls, record: Recording, report: Report, index: int = 0) -> ReportRow:
        return cls(
            report_id=f"{record.dataset}:{record.recording_id}:{index}",
            recording_id=record.recording_id,
            dataset=record.dataset,
            split=record.split,
            text=report.text,
            facts=report.facts,
            writer=report.writer,
            model=report.model,
            prompt_hash=report.prompt_hash,
            labels=dict(record.labels),
            prompt=report.prompt,
            fallback_reasons=report.fallback_reasons,
        )


def load_reports(path: Path) -> list[ReportRow]:
    """Every report of a JSONL file; a malformed line raises with its line number."""
    return list(iter_reports(path))


def iter_reports(path: Path) -> Iterator[ReportRow]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reports file {path} not found: write it with `acula reports build`")
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield ReportRow.model_validate(json.loads(line))
            except Exception as error:
                raise ValueError(f"{path}:{number}: not a report line: {error}") from error


def append_reports(path: Path, rows: Iterable[ReportRow]) -> None:
    with Path(path).open("a") as handle:
        for row in rows:
            handle.write(row.model_dump_json(exclude_none=True) + "\n")
