"""Refit a bundle's sound-type classifier as export does, and say how it does on sources it never heard.

Export fits the classifier on the training side of every dataset and reports held-out accuracy per dataset:
recordings of the same sources it trained on. This script refits it the same way (same code, the bundle's
own ONNX encoder, the same generated clips) into a scratch folder, checks that the refit reproduces the
bundle's held-out accuracy, and adds ``unseen_source_accuracy/<dataset>``: for each real source, the
classifier refitted without it and asked about all of its recordings. Bundles exported since that figure
existed carry it in their manifest; this measures it for older ones.

Then the gate itself, source by source: the classifier and the out-of-distribution reference are both
refitted without one source (``training.export.ood.fit_reference``, the export's own code, per-type
thresholds included), and that source's recordings go through the service's rules: the model's sound type
is used when confident and not flagged, by the global check, by the check against the recordings of the
type it names, or by both. For each rule: the share of the source's recordings it answers, how many of
those answers are the wrong sound type, and the share of the other sources' test sides it turns away.
(The refits leave out the band-limited copies, so they are a little weaker than the shipped classifier.)
Not a test: docs/RESULTS.md has the figures.

    .venv/bin/python scripts/sound_type_sources.py --bundle models/acula-default --root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from acula.service.bundle import NOT_AUSCULTATION, load_manifest
from acula.training.data import synthetic
from acula.training.data.records import Recording
from acula.training.export import ExportOptions, sound_type
from acula.training.export.embedder import RecordingEmbedder
from acula.training.export.inputs import gather
from acula.training.export.ood import fit_reference
from acula.training.train.audio_dataset import default_cache_dir

RULES = ("confident only", "global check", "per-type check", "both checks")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, default=Path("models/acula-default"))
    parser.add_argument("--root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="Audio cache (default: ACULA_CACHE).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the metrics here.")
    args = parser.parse_args(argv)

    manifest = load_manifest(args.bundle)
    if manifest.sound_type is None:
        print(f"{args.bundle} has no sound-type classifier", file=sys.stderr)
        return 1
    cache = args.cache_dir or default_cache_dir()
    options = ExportOptions(checkpoint=Path(), out=args.bundle)  # only for the generated-clip counts
    generated = synthetic.generated_records(cache / "synthetic", options.generated_clips, held_out=False)
    generated += synthetic.generated_records(cache / "synthetic", options.generated_held_out, held_out=True)
    records = [*gather(args.root, None).records, *generated]
    embedder = RecordingEmbedder(args.bundle / manifest.encoder.file, manifest.encoder, manifest.audio, cache)
    with tempfile.TemporaryDirectory() as scratch:
        spec = sound_type.classifier(records, embedder, Path(scratch), print, options.batch_size)
    if spec is None:
        return 1
    chosen_c = re.search(r"\bC=([0-9.eE+-]+)", spec.description)  # export writes "(logistic, C=...; ...)"
    if chosen_c is None:
        print(f"the refitted classifier's description names no C: {spec.description!r}", file=sys.stderr)
        return 1
    c = float(chosen_c.group(1))
    shipped = manifest.sound_type.metrics
    print(f"\n{args.bundle} ({manifest.name} {manifest.version})\n")
    print("| metric | refitted now | in the bundle |\n|---|---|---|")
    for key, value in spec.metrics.items():
        if key.startswith(("accuracy", "unseen_source_accuracy/", "band_limited_accuracy/")):
            before = shipped.get(key)
            print(f"| {key} | {value:.3f} | {'-' if before is None else f'{before:.3f}'} |")
    gate = gate_without_each_source(records, embedder, c, spec.min_probability, options.batch_size)
    print("\n| source left out | rule | answered | wrong sound type | others' test sides turned away |")
    print("|---|---|---|---|---|")
    for source, rows in gate.items():
        for rule, (answered, wrong, turned_away) in rows.items():
            print(f"| {source} | {rule} | {answered:.3f} | {wrong} | {turned_away:.3f} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"metrics": spec.metrics, "gate": gate}, indent=2) + "\n")
    return 0


def gate_without_each_source(
    records: Sequence[Recording], embedder: RecordingEmbedder, c: float, min_probability: float, batch: int
) -> dict[str, dict[str, tuple[float, int, float]]]:
    """Per source: for each rule, (share answered, wrong answers, share of other test sides turned away)."""
    from acula.service.core.ood import OodScorer

    labelled = [
        r for r in embedder.usable([r for r in records if r.audio_path is not None]) if sound_type.label(r)
    ]
    x, _ = embedder.embed(labelled, batch)
    y = np.asarray([sound_type.label(r) for r in labelled])
    source = np.asarray([r.dataset for r in labelled])
    train = np.asarray([r.split == "train" for r in labelled])
    test = np.asarray([r.split.startswith("test") for r in labelled])
    real = source != sound_type.GENERATED
    result: dict[str, dict[str, tuple[float, int, float]]] = {}
    for left_out in sorted(set(source[real].tolist())):
        keep = train & (source != left_out)
        scored = (source == left_out) & np.isin(y, y[keep])
        if not scored.any():
            continue
        classes, probabilities = sound_type.refit_probabilities(x[keep], y[keep], x, c)
        predicted = classes[probabilities.argmax(axis=1)]
        confident = probabilities.max(axis=1) >= min_probability
        reference = keep & real
        groups = np.asarray([f"{r.dataset}/{r.subject_id}" for r in labelled])[reference]
        with tempfile.TemporaryDirectory() as scratch:
            ood = fit_reference(x[reference], groups, Path(scratch), sound_types=y[reference])
            scorer = OodScorer(Path(scratch), ood, dim=x.shape[1])
            far = np.asarray([scorer.score(row).flagged for row in x])
            unlike = np.asarray(
                [
                    bool((check := scorer.score_as(row, kind)) and check.flagged)
                    for row, kind in zip(x, predicted, strict=True)
                ]
            )
        others = test & real & (source != left_out)
        rows = {}
        for rule, refused in zip(RULES, (np.zeros_like(far), far, unlike, far | unlike), strict=True):
            answered = confident & (predicted != NOT_AUSCULTATION) & ~refused
            wrong = int((answered & scored & (predicted != y)).sum())
            rows[rule] = (
                round(float(answered[scored].mean()), 3),
                wrong,
                round(float(refused[others].mean()), 3),
            )
        result[left_out] = rows
    return result


if __name__ == "__main__":
    raise SystemExit(main())
