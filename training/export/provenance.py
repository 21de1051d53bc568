"""Where a bundle came from: datasets and their licences, run configs, the project commit, the teacher.

Recorded in the manifest so that a bundle found on a disk can be traced back to the code and data that made
it; the teacher is the one named in the checkpoint's own run config, not whatever is installed now.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acula.service.bundle import DatasetProvenance, PretrainedProvenance, Provenance
from acula.training.data.records import Recording


def git_commit(cwd: Path | None = None, ignore: Path | None = None) -> str:
    """The project's commit, or 'unknown' outside a git checkout (a dirty tree is marked '+dirty'). ``ignore``
    (the bundle being written) does not count: rebuilding a committed bundle in place changes it."""
    pathspec = ["--", ":/", f":(exclude){Path(ignore).resolve()}"] if ignore is not None else []
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", *pathspec],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "") if head else "unknown"


def teacher_spec(payload: dict[str, Any]) -> Any:
    """The teacher the checkpoint was aligned with (its run config), else the packaged default."""
    from acula.training.teacher import TeacherSpec

    run_config = payload.get("run_config") or {}
    return TeacherSpec.model_validate(run_config.get("teacher") or {})


def pretrained_weights(model_config: Any, bundle_dir: Path) -> PretrainedProvenance | None:
    """The pretrained weights the model was post-trained from, their licence texts copied into the bundle
    (they must travel with anything derived from the weights); None for an encoder trained from scratch."""
    import shutil

    from acula.training.nets.efficientat import weights_provenance

    found = weights_provenance(model_config.mobilenet) if model_config.encoder == "mobilenet" else None
    if found is None:
        return None
    facts, texts = found
    for text in texts:
        shutil.copyfile(text, Path(bundle_dir) / text.name)
    return PretrainedProvenance.model_validate(facts | {"licence_files": [t.name for t in texts]})


def provenance(
    records: Sequence[Recording],
    licences: dict[str, str],
    configs: dict[str, Any],
    teacher: str | None,
    pretrained: PretrainedProvenance | None = None,
    bundle_dir: Path | None = None,
) -> Provenance:
    """Training-side recordings per dataset with their licences, the run configs (as JSON), the commit,
    the teacher and the pretrained weights."""
    counts: dict[str, int] = {}
    for record in records:
        if record.is_training_side:
            counts[record.dataset] = counts.get(record.dataset, 0) + 1
    return Provenance(
        datasets=[
            DatasetProvenance(
                name=name, licence=licences.get(name, "see the dataset's release"), recordings=n
            )
            for name, n in sorted(counts.items())
        ],
        training_config=json.loads(json.dumps(configs, default=str)),
        project_commit=git_commit(ignore=bundle_dir),
        teacher=teacher,
        pretrained=pretrained,
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    )
