"""The training loop shared by SSL and alignment.

An *objective* is an ``nn.Module`` that holds the model (and any learnable loss parameters) and whose
``forward(*batch)`` returns NAMED, unweighted loss parts; the loop multiplies them by the run's
``loss_weights`` and sums. Wrapping the objective (not the bare model) in DDP keeps every parameter that
gets a gradient inside the one module DDP synchronises.

The loop owns: seeding, device and mixed precision (bf16 autocast on CUDA, fp16 with a grad scaler on
request, fp32 on CPU), torchrun/DDP (``WORLD_SIZE`` > 1), gradient accumulation, warm-up + cosine schedule,
``last.pt`` checkpoints with optimizer state and exact resume (data order is a pure function of
seed and epoch, so a resumed run skips the micro-batches already seen), per-step metrics in
``metrics.jsonl``, a progress bar, and ``loss.png`` at the end.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from acula.training.nets.factory import save_checkpoint
from acula.training.nets.model import AculaAudioModel
from acula.training.train.audio_dataset import CropDataset
from acula.training.train.config import TrainConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class DistEnv:
    """Rank and world size from torchrun's environment; a single process otherwise."""

    def __init__(self, device_pref: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device_pref != "cpu"
        if device_pref == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "device = 'cuda' but no CUDA device is available; use device = 'auto' or 'cpu'"
            )
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if use_cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0


class EpochSampler(Sampler[int]):
    """A permutation drawn from ``(seed, epoch)``, this rank's share of it, minus the first ``skip`` items."""

    def __init__(
        self, size: int, seed: int, epoch: int, rank: int = 0, world: int = 1, skip: int = 0
    ) -> None:
        order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        self.indices = order[rank::world][skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def param_groups(named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, scalars (temperature) and tokens."""
    decay = [p for _, p in named if p.requires_grad and p.ndim >= 2]
    no_decay = [p for _, p in named if p.requires_grad and p.ndim < 2]
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        return torch.float16
    return torch.bfloat16


def state_checksum(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer of ``module``, in name order: equal exactly when two
    processes hold the same model."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def replica_checksums(model: nn.Module, env: DistEnv) -> list[str]:
    """Every rank's :func:`state_checksum`; raises when DDP replicas ended different (a broken gradient
    sync or an unsynchronised buffer would otherwise ship rank 0's model as if all agreed)."""
    if env.world == 1:
        return [state_checksum(model)]
    # DDP keeps buffers (BatchNorm running statistics) in step by broadcasting rank 0's at every forward;
    # the last forward updated each rank's own, so finish with that same broadcast.
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, src=0)
    local = state_checksum(model)
    gathered: list[str | None] = [None] * env.world
    torch.distributed.all_gather_object(gathered, local)
    checksums = [str(c) for c in gathered]
    if len(set(checksums)) > 1:
        raise RuntimeError(f"DDP replicas diverged: rank checksums {[c[:12] for c in checksums]}")
    return checksums


def plot_losses(metrics_path: Path, out: Path) -> Path | None:
    """``metrics.jsonl`` -> PNG of every loss part against the optimiser step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    keys = [k for k in rows[0] if k.startswith("loss")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def train(
    cfg: TrainConfig,
    objective: nn.Module,
    model: AculaAudioModel,
    dataset: CropDataset,
    groups: list[dict],
    weights: dict[str, float],
    final_extra: dict | None = None,
) -> Path:
    """Run the loop; returns the path of ``final.pt`` (a model checkpoint ``load_checkpoint`` reads)."""
    from tqdm import tqdm

    env = DistEnv(cfg.device)
    if cfg.threads is not None and env.device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + env.rank)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    objective.to(env.device)
    wrapped: nn.Module = objective
    if env.world > 1:
        ids = [env.local_rank] if env.device.type == "cuda" else None
        # SSL leaves the projection heads unused, so DDP must not wait for their gradients.
        wrapped = nn.parallel.DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=True)

    batch = cfg.data.batch_size
    per_rank = len(dataset) // env.world
    micro_per_epoch = per_rank // batch
    steps_per_epoch = micro_per_epoch // cfg.accumulate
    if steps_per_epoch < 1:
        raise ValueError(
            f"{len(dataset)} training items are too few for batch_size={batch} x accumulate={cfg.accumulate}"
            f" x {env.world} processes: lower data.batch_size"
        )
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(groups, betas=cfg.optim.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, total, cfg.optim.min_lr_ratio)
    )
    amp_dtype = _amp_dtype(cfg.amp, env.device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    step, start_epoch, skip_micro = 0, 0, 0
    last_path = run_dir / "last.pt"
    if cfg.checkpoint.resume and last_path.is_file():
        state = torch.load(last_path, map_location=env.device, weights_only=True)
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, start_epoch, skip_micro = state["step"], state["epoch"], state["micro_in_epoch"]
        if env.main:
            print(f"resuming {last_path} at step {step} (epoch {start_epoch}, micro-batch {skip_micro})")

    def write_last(epoch: int, micro_in_epoch: int) -> None:
        if not env.main:
            return
        payload = {
            "config": model.config.model_dump(mode="json"),
            "model": model.state_dict(),
            "objective": objective.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "epoch": epoch,
            "micro_in_epoch": micro_in_epoch,
            "run_config": json.loads(cfg.model_dump_json()),
        }
        tmp = last_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(last_path)

    metrics_path = run_dir / "metrics.jsonl"
    if step == 0 and env.main:
        metrics_path.write_text("")
    bar = tqdm(total=total, initial=step, disable=not (cfg.progress and env.main), desc=cfg.name)
    started = time.perf_counter()
    steps_this_run = 0
    objective.train()
    epoch = start_epoch
    while step < total:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler = EpochSampler(len(dataset), cfg.seed, epoch, env.rank, env.world, skip=skip_micro * batch)
        loader = DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.data.num_workers,
            pin_memory=env.device.type == "cuda",
            persistent_workers=False,
        )
        micro = skip_micro
        sums: dict[str, float] = {}
        for items in loader:
            if micro >= steps_per_epoch * cfg.accumulate:
                break
            items = [t.to(env.device, non_blocking=True) for t in items]
            with torch.autocast(
                env.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                parts = wrapped(*items)
            loss = sum(weights[name] * value for name, value in parts.items())
            scaler.scale(loss / cfg.accumulate).backward()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            micro += 1
            if micro % cfg.accumulate:
                continue
            if cfg.optim.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(objective.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            steps_this_run += 1
            bar.update(1)
            averaged = {k: v / cfg.accumulate for k, v in sums.items()}
            sums = {}
            bar.set_postfix(loss=f"{averaged['loss']:.4f}")
            if env.main and (step % cfg.log_every == 0 or step == total):
                elapsed = time.perf_counter() - started
                row = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0]}
                row |= {("loss" if k == "loss" else f"loss/{k}"): v for k, v in averaged.items()}
                row |= {k: float(v) for k, v in getattr(objective, "extra_metrics", dict)().items()}
                row["steps_per_s"] = steps_this_run / max(elapsed, 1e-9)
                with metrics_path.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
            if step % cfg.checkpoint.every_steps == 0:
                write_last(epoch, micro)
            if step >= total:
                break
        skip_micro = 0
        if step < total:
            epoch += 1
    bar.close()
    write_last(epoch, 0 if step < total else micro)
    checksums = replica_checksums(model, env)
    final = run_dir / "final.pt"
    if env.main:
        run_config = json.loads(cfg.model_dump_json())
        extra = (final_extra or {}) | {
            "replica_checksums": checksums,
            "seconds": time.perf_counter() - started,
        }
        save_checkpoint(final, model, step=step, run_config=run_config, **extra)
        plot_losses(metrics_path, run_dir / "loss.png")
    if env.world > 1:
        torch.distributed.barrier()
    return final
