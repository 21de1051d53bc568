"""Alignment steps per second with the teacher cache vs running the frozen teacher every step.

Not a test: a measurement for the record. Both modes run the same alignment objective (default CPU model,
real audio crops, real report texts) in one process, interleaved in rounds so that background load affects
both alike, and the script prints steps/s for each and their ratio.

    .venv/bin/python scripts/bench_teacher_cache.py --reports reports/reports.jsonl --steps 10
    .venv/bin/python scripts/bench_teacher_cache.py   # SPRSound files + a sentence from each JSON label

Cached mode: the teacher embedded every distinct text once before the loop (``TeacherCache``), a step
looks the batch's rows up. Uncached mode: each step runs the teacher on the batch's texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acula.training.data.records import Recording  # noqa: E402
from acula.training.losses import text_ids_for  # noqa: E402
from acula.training.nets.factory import build_model  # noqa: E402
from acula.training.teacher import TeacherCache, load_teacher  # noqa: E402
from acula.training.train.align import AlignObjective  # noqa: E402
from acula.training.train.audio_dataset import AudioCache, random_crop  # noqa: E402
from acula.training.train.config import AlignConfig, SSLConfig, load_config  # noqa: E402
from acula.training.train.pairs import build_pairs, read_reports  # noqa: E402


def sprsound_pairs(root: Path, limit: int) -> tuple[list[Recording], list[dict]]:
    """Fallback when no reports file exists: SPRSound training files, one sentence from each JSON label."""
    from pydantic import BaseModel

    class Meta(BaseModel):
        label: str

    records, reports = [], []
    for path in sorted((root / "sprsound" / "train_wav").glob("*.flac"))[:limit]:
        label = json.loads((root / "sprsound" / "train_json" / f"{path.stem}.json").read_text())[
            "record_annotation"
        ]
        _, age, sex, position, _ = path.stem.split("_")
        rec = Recording(
            dataset="sprsound",
            recording_id=path.stem,
            subject_id=path.stem.split("_")[0],
            audio_path=path,
            native_rate=8000,
            duration_s=None,
            split="train",
            metadata=Meta(label=label),
        )
        text = (
            f"Paediatric respiratory auscultation of a {age}-year-old {'boy' if sex == '0' else 'girl'} at "
            f"position {position}. The recording is labelled {label}."
        )
        records.append(rec)
        reports.append(
            {"recording_id": rec.recording_id, "dataset": "sprsound", "split": "train", "text": text}
        )
    return records, reports


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--reports", type=Path, default=None, help="Reports JSONL; default: SPRSound labels.")
    parser.add_argument("--config", type=Path, default=Path("configs/align.toml"))
    parser.add_argument("--model-config", type=Path, default=Path("configs/ssl.toml"))
    parser.add_argument("--steps", type=int, default=8, help="Steps per mode per round.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_config(args.config, AlignConfig)
    batch = args.batch_size or cfg.data.batch_size
    n_items = batch * args.steps
    if args.reports is not None:
        from acula.training.data import load_records

        records = load_records(args.root)
        pairs = build_pairs(records, read_reports(args.reports), "train")
    else:
        records, reports = sprsound_pairs(args.root, n_items)
        pairs = build_pairs(records, reports, "train")
    if len(pairs.records) < n_items:
        raise SystemExit(f"only {len(pairs.records)} pairs; lower --steps or --batch-size")

    teacher = load_teacher(cfg.teacher)
    model = build_model(
        load_config(args.model_config, SSLConfig).model.model_copy(update={"text_dim": teacher.hidden_size})
    )
    audio = AudioCache(cfg.data.cache_dir, model.sample_rate)
    window = round(cfg.data.window_seconds * model.sample_rate)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(pairs.records), size=n_items, replace=False)
    crops = torch.from_numpy(np.stack([random_crop(audio.load(pairs.records[i]), window, rng) for i in rows]))
    texts = [pairs.texts[pairs.text_indices[i][0]] for i in rows]

    with tempfile.TemporaryDirectory() as tmp:
        cache = TeacherCache(teacher, Path(tmp))
        table_texts = sorted(set(texts))
        table = torch.from_numpy(cache.encode(table_texts))  # the one teacher run of cached mode
        position = {t: i for i, t in enumerate(table_texts)}
        weights = cfg.loss_weights.model_dump()
        objective = AlignObjective(
            model, table, cfg.contrastive, cfg.mask_ratio, weights, cfg.masked_batch_fraction
        )
        optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-4)

        def step(wave: torch.Tensor, index: torch.Tensor) -> None:
            parts = objective(wave, index)
            loss = sum(weights[k] * v for k, v in parts.items())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def cached(i: int) -> None:
            chunk = texts[i * batch : (i + 1) * batch]
            objective.text_table = table
            step(crops[i * batch : (i + 1) * batch], torch.tensor([position[t] for t in chunk]))

        def uncached(i: int) -> None:
            chunk = texts[i * batch : (i + 1) * batch]
            ids = text_ids_for(chunk)
            unique = list(dict.fromkeys(chunk))
            objective.text_table = torch.from_numpy(teacher.encode(unique))  # the teacher runs every step
            step(crops[i * batch : (i + 1) * batch], ids)

        cached(0), uncached(0)  # warm-up
        times = {"cached": 0.0, "uncached": 0.0}
        for _ in range(args.rounds):
            for name, fn in (("cached", cached), ("uncached", uncached)):
                start = time.perf_counter()
                for i in range(args.steps):
                    fn(i)
                times[name] += time.perf_counter() - start
    total = args.steps * args.rounds
    rate = {k: total / v for k, v in times.items()}
    print(f"batch {batch}, {total} steps per mode, teacher {teacher.identity}, {args.threads} threads")
    print(f"with teacher cache:    {rate['cached']:.3f} steps/s")
    print(f"teacher every step:    {rate['uncached']:.3f} steps/s")
    print(f"speed-up (cached / uncached): {rate['cached'] / rate['uncached']:.2f}x")


if __name__ == "__main__":
    main()
