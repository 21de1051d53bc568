"""Refit a bundle's sound-type classifier as export does, and say how it does on sources it never heard.

Export fits the classifier on the training side of every dataset and reports held-out accuracy per dataset:
recordings of the same sources it trained on. This script refits it the same way (same code, the bundle's
own ONNX encoder, the same generated clips) into a scratch folder, checks that the refit reproduces the
bundle's held-out accuracy, and adds ``unseen_source_accuracy/<dataset>``: for each real source, the
classifier refitted without it and asked about all of its recordings. Bundles exported since that figure
existed carry it in their manifest; this measures it for older ones. Not a test: docs/RESULTS.md has the
figures.

    .venv/bin/python scripts/sound_type_sources.py --bundle models/acula-default --root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from acula.service.bundle import load_manifest
from acula.training.data import synthetic
from acula.training.export import ExportOptions, sound_type
from acula.training.export.embedder import RecordingEmbedder
from acula.training.export.inputs import gather
from acula.training.train.audio_dataset import default_cache_dir


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
    shipped = manifest.sound_type.metrics
    print(f"\n{args.bundle} ({manifest.name} {manifest.version})\n")
    print("| metric | refitted now | in the bundle |\n|---|---|---|")
    for key, value in spec.metrics.items():
        if key.startswith(("accuracy", "unseen_source_accuracy/", "band_limited_accuracy/")):
            before = shipped.get(key)
            print(f"| {key} | {value:.3f} | {'-' if before is None else f'{before:.3f}'} |")
    if args.json is not None:
        args.json.write_text(json.dumps(spec.metrics, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
