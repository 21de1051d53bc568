"""The typed record every dataset adapter yields: one per recording.

Adapters (one module per release format) turn a dataset's own files into these records; everything after
them (splits, reports, training, benchmark) reads records only, never the release files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Split = Literal["train", "test", "test-intra", "test-inter", "none"]
"""``train`` may be seen by SSL/alignment; anything starting with ``test`` never is. ``none``: no audio."""


class Recording(BaseModel):
    """One recording (or, for metadata-only datasets such as CirCor, one patient's metadata)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(description="Dataset key, e.g. 'sprsound', 'physionet2016'.")
    recording_id: str = Field(description="Unique within the dataset; the file stem for audio datasets.")
    subject_id: str = Field(description="Patient/participant id; splits never separate one subject.")
    audio_path: Path | None = Field(description="Absolute path to the audio file; None when there is none.")
    native_rate: int | None = Field(description="Sample rate of the file as stored, Hz.")
    duration_s: float | None = Field(description="Duration of the file as stored, seconds.")
    split: Split = Field(description="Subject-level split, from acula.training.data.splits.")
    fold: int | None = Field(None, description="Subject-level cross-validation fold (0..4) where defined.")
    site: str | None = Field(None, description="Chest/body site, normalised (e.g. 'left posterior chest').")
    metadata: BaseModel = Field(description="Dataset-specific typed metadata model.")
    labels: dict[str, str | float | bool | list[str] | None] = Field(
        default_factory=dict, description="Task labels, e.g. {'record_label': 'CAS', 'age_years': 4.9}."
    )

    @property
    def is_training_side(self) -> bool:
        """True when self-supervised and alignment training may see this recording and its report."""
        return self.split == "train" and self.audio_path is not None
