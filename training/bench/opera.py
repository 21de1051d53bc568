"""The OPERA benchmark's linear probe, reproduced so our numbers compare with the paper's protocol.

OPERA (Zhang et al., 2024, ``src/model/models_eval.py``, ``src/benchmark/linear_eval.py``) evaluates a frozen
encoder with ONE linear layer on its features: weights drawn from N(0, 0.01), bias zero; Adam at lr 1e-4; an
L2 penalty of 1e-5 added to the loss; the learning rate multiplied by 0.97 after every epoch; 64 epochs;
gradient norm clipped at 1.0; batches of 32; the checkpoint with the best validation AUROC is the one
tested. We repeat it for seeds 0 to 4 and report mean and standard deviation.

Where we differ, and why:
- the L2 penalty applies to the head's weights only, not its bias (a penalty on the bias only shifts the
  decision threshold towards the majority class, which AUROC ignores but calibration does not);
- the validation set is a subject-grouped, label-stratified 20 % of the probe's training side (OPERA uses a
  recording-level split), so the checkpoint is not chosen by how well it memorises patients;
- multilabel tasks use one linear layer with a sigmoid per label (binary cross-entropy), and regression a
  standardised target with squared error, checkpointed on validation MAE (as OPERA's ``LinearHeadR``).
Features are NOT standardised by default, as in OPERA (``standardise=True`` changes that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from acula.training.bench.metrics import TaskKind, higher_is_better, score_task
from acula.training.probes import ProbeOutput, grouped_validation_split, standardiser


@dataclass(frozen=True)
class OperaConfig:
    lr: float = 1e-4  # Adam learning rate at epoch 0
    l2: float = 1e-5  # L2 strength on the head weights, added to the loss
    gamma: float = 0.97  # learning rate multiplied by this after every epoch
    epochs: int = 64
    batch_size: int = 32  # OPERA's setting for lr 1e-4 / l2 1e-5
    grad_clip: float = 1.0  # max gradient norm (Lightning's gradient_clip_val)
    init_std: float = 0.01  # weights ~ N(0, init_std), bias 0
    val_fraction: float = 0.2  # share of SUBJECTS of the training side used for checkpoint selection
    standardise: bool = False  # OPERA feeds raw features
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)


@dataclass
class OperaFit:
    """One seed's training: the selected head and the per-epoch history (read by the schedule test)."""

    weight: np.ndarray  # (outputs, D)
    bias: np.ndarray  # (outputs,)
    best_epoch: int  # 0-based epoch whose weights were kept
    lrs: list[float] = field(default_factory=list)  # learning rate used during each epoch
    val_metric: list[float] = field(default_factory=list)  # validation metric after each epoch


def _outputs(kind: TaskKind, num_outputs: int) -> int:
    return 1 if kind == "regression" else num_outputs


def _loss(kind: TaskKind, logits, target):
    """Mean loss over the batch for each seed: ``(S, B, O)`` logits -> ``(S,)``."""
    import torch.nn.functional as F

    if kind in ("binary", "multiclass"):
        return F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(1)
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((1, 2))
    return F.mse_loss(logits[..., 0], target, reduction="none").mean(1)


def l2_penalty(weight, strength: float):
    """``strength * ||W||^2`` per head, on the weight matrices only (the bias is not penalised; see above).

    ``weight`` is one head's ``(O, D)`` matrix or a stack ``(S, O, D)`` of one per seed.
    """
    return strength * weight.pow(2).sum((-2, -1))


def _scores(kind: TaskKind, logits) -> np.ndarray:
    """Logits -> the score layout of :mod:`training.bench.metrics` (regression: the standardised value)."""
    import torch

    if kind == "binary":
        return torch.softmax(logits, dim=-1)[..., 1].numpy()
    if kind == "multiclass":
        return torch.softmax(logits, dim=-1).numpy()
    if kind == "multilabel":
        return torch.sigmoid(logits).numpy()
    return logits[..., 0].numpy()


def train_heads(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    kind: TaskKind,
    num_outputs: int,
    seeds: tuple[int, ...],
    config: OperaConfig = OperaConfig(),
) -> list[OperaFit]:
    """Train one linear head per seed by the OPERA schedule; keep each seed's best validation epoch.

    The seeds train side by side as one stacked ``(S, O, D)`` tensor: Adam is elementwise, the loss is a sum
    of per-seed losses and the gradient norm is clipped per seed, so each head follows exactly the path it
    would follow alone (its own initialisation and batch order from ``Generator(seed)``), at a fifth of the
    Python overhead. For regression, ``y_fit`` and ``y_val`` must already be standardised.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a linear head is tiny: a second thread only adds synchronisation
    try:
        return _train_heads(x_fit, y_fit, x_val, y_val, kind, num_outputs, seeds, config)
    finally:
        torch.set_num_threads(threads)


def _train_heads(
    x_fit, y_fit, x_val, y_val, kind: TaskKind, num_outputs: int, seeds, config
) -> list[OperaFit]:
    import torch

    outputs, dim = _outputs(kind, num_outputs), x_fit.shape[1]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    weight = torch.stack(
        [torch.empty(outputs, dim).normal_(0.0, config.init_std, generator=g) for g in generators]
    )
    weight.requires_grad_(True)  # (S, O, D)
    bias = torch.zeros(len(seeds), outputs, requires_grad=True)  # (S, O)
    optimiser = torch.optim.Adam([weight, bias], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=config.gamma)
    x = torch.as_tensor(x_fit, dtype=torch.float32)
    xv = torch.as_tensor(x_val, dtype=torch.float32)
    target_dtype = torch.long if kind in ("binary", "multiclass") else torch.float32
    y = torch.as_tensor(np.asarray(y_fit), dtype=target_dtype)
    sign = 1.0 if higher_is_better(kind) else -1.0
    fits = [OperaFit(weight=np.empty(0), bias=np.empty(0), best_epoch=-1) for _ in seeds]
    best = [-np.inf] * len(seeds)
    for epoch in range(config.epochs):
        lr = optimiser.param_groups[0]["lr"]
        orders = torch.stack([torch.randperm(len(x), generator=g) for g in generators])  # (S, N)
        for start in range(0, len(x), config.batch_size):
            rows = orders[:, start : start + config.batch_size]  # (S, B)
            logits = torch.einsum("sbd,sod->sbo", x[rows], weight) + bias[:, None, :]
            loss = (_loss(kind, logits, y[rows]) + l2_penalty(weight, config.l2)).sum()
            optimiser.zero_grad()
            loss.backward()
            with torch.no_grad():  # clip_grad_norm_ per seed: coef = max_norm / (norm + 1e-6), at most 1
                weight_grad, bias_grad = weight.grad, bias.grad
                assert weight_grad is not None and bias_grad is not None  # both are in the loss
                norm = (weight_grad.pow(2).sum((1, 2)) + bias_grad.pow(2).sum(1)).sqrt()
                coef = (config.grad_clip / (norm + 1e-6)).clamp(max=1.0)
                weight_grad.mul_(coef[:, None, None])
                bias_grad.mul_(coef[:, None])
            optimiser.step()
        scheduler.step()
        with torch.no_grad():
            val_scores = _scores(kind, torch.einsum("bd,sod->sbo", xv, weight) + bias[:, None, :])
        for s, fit in enumerate(fits):
            fit.lrs.append(lr)
            value = score_task(kind, y_val, val_scores[s])
            fit.val_metric.append(value)
            if not np.isnan(value) and sign * value > best[s]:  # strict: ties keep the earlier epoch
                best[s], fit.best_epoch = sign * value, epoch
                fit.weight, fit.bias = weight[s].detach().numpy().copy(), bias[s].detach().numpy().copy()
    for s, fit in enumerate(fits):
        if fit.best_epoch < 0:  # validation metric undefined throughout (one class): keep the last epoch
            fit.best_epoch = config.epochs - 1
            fit.weight, fit.bias = weight[s].detach().numpy().copy(), bias[s].detach().numpy().copy()
    return fits


def train_head(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    kind: TaskKind,
    num_outputs: int,
    seed: int,
    config: OperaConfig = OperaConfig(),
) -> OperaFit:
    """One seed of :func:`train_heads`."""
    return train_heads(x_fit, y_fit, x_val, y_val, kind, num_outputs, (seed,), config)[0]


def apply_head(fit: OperaFit, x: np.ndarray, kind: TaskKind) -> np.ndarray:
    import torch

    logits = torch.as_tensor(x, dtype=torch.float32) @ torch.as_tensor(fit.weight).T + torch.as_tensor(
        fit.bias
    )
    return _scores(kind, logits)


def opera_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    groups_train: np.ndarray,
    x_eval: np.ndarray,
    kind: TaskKind,
    num_outputs: int,
    config: OperaConfig = OperaConfig(),
) -> list[ProbeOutput]:
    """One :class:`ProbeOutput` per seed, each from the best-validation epoch of that seed's run."""
    x_train = np.asarray(x_train, dtype=np.float64)
    x_eval = np.asarray(x_eval, dtype=np.float64)
    y_train = np.asarray(y_train)
    if config.standardise:
        mean, scale = standardiser(x_train)
        x_train, x_eval = (x_train - mean) / scale, (x_eval - mean) / scale
    fit_rows, val_rows = grouped_validation_split(y_train, groups_train, kind, config.val_fraction)
    target = y_train
    target_mean, target_scale = 0.0, 1.0
    if kind == "regression":
        target_mean = float(y_train[fit_rows].mean())
        target_scale = float(y_train[fit_rows].std() or 1.0)
        target = (y_train.astype(np.float64) - target_mean) / target_scale
    fits = train_heads(
        x_train[fit_rows],
        target[fit_rows],
        x_train[val_rows],
        target[val_rows],
        kind,
        num_outputs,
        config.seeds,
        config,
    )
    outputs = []
    for seed, fit in zip(config.seeds, fits, strict=True):
        scores = apply_head(fit, x_eval, kind)
        if kind == "regression":
            scores = scores * target_scale + target_mean
        info = {"probe": "opera", "seed": seed, "best_epoch": fit.best_epoch}
        outputs.append(ProbeOutput(scores, info))
    return outputs
