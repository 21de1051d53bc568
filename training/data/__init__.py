"""Dataset adapters, subject-level splits and the one entry point the rest of the project uses.

``load_records(root)`` reads every dataset present under ``root`` (the layout of ``../shared/data``: one
folder per dataset) through its adapter and applies the committed splits (``training/data/splits.json``).
``load_datasets`` does the same but also returns what each adapter skipped, for the CLI to show.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from acula.training.data import (
    bmd_hs,
    circor2022,
    coswara,
    hls_cmds,
    icbhi2017,
    physionet2016,
    splits,
    sprsound,
)
from acula.training.data.common import AdapterResult, Skipped
from acula.training.data.records import Recording

log = logging.getLogger("acula.data")

# dataset key -> (adapter, folder names it may have under the root, first match wins)
ADAPTERS: dict[str, tuple[Callable[[Path], AdapterResult], tuple[str, ...]]] = {
    "sprsound": (sprsound.load, ("sprsound", "SPRSound")),
    "physionet2016": (physionet2016.load, ("physionet2016", "classification-of-heart-sound-recordings")),
    "bmd_hs": (bmd_hs.load, ("bmd_hs", "BMD-HS", "bmd-hs")),
    "coswara": (coswara.load, ("coswara", "Coswara-Data")),
    "hls_cmds": (hls_cmds.load, ("hls_cmds", "HLS-CMDS")),
    "icbhi2017": (icbhi2017.load, ("icbhi2017_sample", "icbhi2017", "ICBHI_final_database")),
    "circor2022": (circor2022.load, ("circor2022_metadata", "circor2022", "the-circor-digiscope")),
}
DATASETS: tuple[str, ...] = tuple(ADAPTERS)

__all__ = ["DATASETS", "Recording", "Skipped", "dataset_folder", "load_datasets", "load_records"]


def dataset_folder(root: Path, dataset: str) -> Path | None:
    """The folder holding ``dataset`` under ``root``, or None when it is not there."""
    for name in ADAPTERS[dataset][1]:
        if (root / name).is_dir():
            return root / name
    return None


def _check_names(datasets: list[str] | None) -> list[str]:
    names = list(DATASETS) if not datasets else list(datasets)
    unknown = [n for n in names if n not in ADAPTERS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}: choose from {', '.join(DATASETS)}")
    return names


def load_datasets(
    root: Path, datasets: list[str] | None = None, splits_file: Path | None = None, apply_splits: bool = True
) -> dict[str, AdapterResult]:
    """dataset -> records (splits applied) and skipped items; datasets absent under ``root`` are left out
    (or raise, when asked for by name)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist (expected e.g. ../shared/data)")
    names = _check_names(datasets)
    listed = splits.read(splits_file or splits.DEFAULT_FILE) if apply_splits else {}
    results: dict[str, AdapterResult] = {}
    for name in names:
        folder = dataset_folder(root, name)
        if folder is None:
            if datasets:
                raise FileNotFoundError(f"{name}: none of {ADAPTERS[name][1]} found under {root}")
            log.info("%s: not present under %s", name, root)
            continue
        result = ADAPTERS[name][0](folder)
        if result.skipped:
            reasons = Counter(skip.reason.split(":")[0] for skip in result.skipped)
            log.warning("%s: skipped %d item(s): %s", name, len(result.skipped), dict(reasons))
        if apply_splits:
            result.records = splits.apply(name, result.records, listed.get(name, {}))
        results[name] = result
    return results


def load_records(root: Path, datasets: list[str] | None = None) -> list[Recording]:
    """Every record of ``datasets`` (default: all present under ``root``), with subject-level splits."""
    results = load_datasets(root, datasets)
    return [record for result in results.values() for record in result.records]
