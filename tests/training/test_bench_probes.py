"""Probes on synthetic features whose answer is known, and the OPERA probe's schedule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from acula.training.bench.metrics import score_task
from acula.training.bench.opera import OperaConfig, l2_penalty, opera_probe, train_head, train_heads
from acula.training.probes import grouped_validation_split, linear_probe


def _blobs(n: int, dim: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two classes whose means differ by ``shift`` along every axis; 4 recordings per subject."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, dim)) + shift * y[:, None]
    groups = np.arange(n) // 4
    return x, y, groups


FAST_OPERA = OperaConfig(epochs=12, seeds=(0, 1), lr=1e-2)


def test_auroc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from acula.training.bench.metrics import binary_auroc

    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + 0.5 * y, 1)  # rounding makes many ties
    assert binary_auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert np.isnan(binary_auroc(np.ones(5), np.arange(5.0)))


def test_separable_classes_give_auroc_one():
    x, y, groups = _blobs(400, 16, shift=6.0, seed=0)
    xe, ye, _ = _blobs(200, 16, shift=6.0, seed=1)
    out = linear_probe(x, y, groups, xe, "binary", 2)
    assert score_task("binary", ye, out.scores) == 1.0
    for seed_out in opera_probe(x, y, groups, xe, "binary", 2, FAST_OPERA):
        assert score_task("binary", ye, seed_out.scores) == 1.0


def test_shuffled_labels_give_chance_auroc():
    x, y, groups = _blobs(1000, 32, shift=1.0, seed=2)
    xe, ye, _ = _blobs(1000, 32, shift=1.0, seed=3)
    rng = np.random.default_rng(4)
    shuffled, shuffled_eval = rng.permutation(y), rng.permutation(ye)  # labels now carry no information
    auroc = score_task("binary", shuffled_eval, linear_probe(x, shuffled, groups, xe, "binary", 2).scores)
    assert abs(auroc - 0.5) < 0.06
    opera = opera_probe(x, shuffled, groups, xe, "binary", 2, FAST_OPERA)
    assert all(abs(score_task("binary", shuffled_eval, o.scores) - 0.5) < 0.06 for o in opera)
    real = score_task("binary", ye, linear_probe(x, y, groups, xe, "binary", 2).scores)
    assert real > 0.95  # the same features with the true labels are easy: the shuffle is what removed it


def test_ridge_recovers_a_linear_target():
    rng = np.random.default_rng(5)
    w = rng.normal(size=20)
    x, xe = rng.normal(size=(600, 20)), rng.normal(size=(300, 20))
    y, ye = x @ w + 3.0 + 0.05 * rng.normal(size=600), xe @ w + 3.0
    out = linear_probe(x, y, np.arange(600) // 3, xe, "regression", 1)
    mae = score_task("regression", ye, out.scores)
    assert mae < 0.05 * ye.std()
    assert out.info["probe"] == "ridge"


def test_multiclass_and_multilabel_probes_score_each_column():
    rng = np.random.default_rng(6)
    centres = rng.normal(scale=5.0, size=(4, 8))
    y = rng.integers(0, 4, 800)
    x = centres[y] + rng.normal(size=(800, 8))
    out = linear_probe(x[:600], y[:600], np.arange(600) // 4, x[600:], "multiclass", 4)
    assert out.scores.shape == (200, 4)
    assert np.allclose(out.scores.sum(1), 1.0)
    assert score_task("multiclass", y[600:], out.scores) > 0.98
    labels = np.stack([(x[:, j] > centres[:, j].mean()).astype(int) for j in range(3)], axis=1)
    out = linear_probe(x[:600], labels[:600], np.arange(600) // 4, x[600:], "multilabel", 3)
    assert out.scores.shape == (200, 3)
    assert score_task("multilabel", labels[600:], out.scores) > 0.95


def test_validation_split_keeps_subjects_whole():
    x, y, groups = _blobs(300, 4, 1.0, seed=7)
    fit, val = grouped_validation_split(y, groups, "binary", 0.2)
    assert not set(groups[fit]) & set(groups[val])
    assert 0.1 < len(val) / len(y) < 0.3
    assert set(y[val]) == {0, 1}


def test_opera_learning_rate_decays_by_097_per_epoch():
    x, y, groups = _blobs(200, 8, 2.0, seed=8)
    fit = train_head(x[:150], y[:150], x[150:], y[150:], "binary", 2, seed=0, config=OperaConfig())
    assert len(fit.lrs) == 64
    for k, lr in enumerate(fit.lrs):
        assert lr == pytest.approx(1e-4 * 0.97**k, rel=1e-9)


def test_opera_penalty_reaches_the_weights_not_the_bias():
    weight = torch.randn(2, 5)
    assert l2_penalty(weight, 1e-5).item() == pytest.approx(1e-5 * weight.pow(2).sum().item())
    # Behaviour: with all-zero features the data gradient reaches only the bias, the penalty only the weights.
    x = np.zeros((64, 5))
    y = np.ones(64, dtype=int)
    config = dataclasses.replace(OperaConfig(), epochs=5, grad_clip=1e9, lr=1e-2)
    free = train_head(x, y, x, y, "binary", 2, seed=0, config=dataclasses.replace(config, l2=0.0))
    decayed = train_head(x, y, x, y, "binary", 2, seed=0, config=dataclasses.replace(config, l2=1.0))
    init = torch.empty(2, 5).normal_(0.0, 0.01, generator=torch.Generator().manual_seed(0)).numpy()
    assert np.allclose(free.weight, init)  # no data gradient and no penalty: weights never move
    assert np.abs(decayed.weight).sum() < 0.5 * np.abs(init).sum()  # the penalty shrinks them
    assert np.allclose(free.bias, decayed.bias)  # the bias follows the data alone, whatever the penalty
    assert free.bias[1] > free.bias[0]


def test_opera_seeds_trained_together_match_seeds_trained_alone():
    x, y, _ = _blobs(200, 8, 0.5, seed=11)
    together = train_heads(x[:150], y[:150], x[150:], y[150:], "binary", 2, (0, 1, 2), OperaConfig(epochs=6))
    for seed, fit in zip((0, 1, 2), together, strict=True):
        alone = train_head(x[:150], y[:150], x[150:], y[150:], "binary", 2, seed, OperaConfig(epochs=6))
        assert np.allclose(fit.weight, alone.weight, atol=1e-6)
        assert fit.val_metric == pytest.approx(alone.val_metric)
    assert not np.allclose(together[0].weight, together[1].weight)  # seeds really differ


def test_opera_keeps_the_best_validation_epoch():
    x, y, groups = _blobs(300, 8, 0.4, seed=9)
    fit = train_head(x[:200], y[:200], x[200:], y[200:], "binary", 2, seed=3, config=OperaConfig(epochs=20))
    values = np.asarray(fit.val_metric)
    assert fit.best_epoch == int(np.nanargmax(values))
    from acula.training.bench.opera import apply_head

    assert score_task("binary", y[200:], apply_head(fit, x[200:], "binary")) == pytest.approx(values.max())


def test_opera_regression_returns_the_target_scale():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(400, 6))
    y = x @ np.arange(1.0, 7.0) + 50.0
    config = OperaConfig(epochs=40, lr=1e-2, seeds=(0,))
    out = opera_probe(x[:300], y[:300], np.arange(300) // 2, x[300:], "regression", 1, config)[0]
    assert score_task("regression", y[300:], out.scores) < 0.1 * y.std()
