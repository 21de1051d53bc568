"""Audio -> report retrieval on the TEST side: the alignment stage's own check (recall@k).

Queries are held-out recordings (embedded with the one windowing policy: ``cut_windows`` then
``pool_windows``); the gallery is the distinct report texts of the held-out recordings; a query is a hit
when one of ITS OWN report texts is among the top k. Two protocols:

- ``joint``: the aligned model's joint space (audio head vs text head on the teacher embedding);
- ``ridge``: a ridge map from the pooled audio embedding to the teacher embedding, fitted on training-side
  pairs. It needs no text head, so it also scores an SSL-only encoder: the fair before/after comparison.

Chance level (random ranking) is reported next to every number.
"""

from __future__ import annotations

from math import comb

import numpy as np
import torch

from acula.service.core.windowing import cut_windows, l2_normalise, pool_windows
from acula.training.nets.model import AculaAudioModel
from acula.training.train.audio_dataset import AudioCache
from acula.training.train.pairs import Pairs


@torch.no_grad()
def embed_recordings(
    model: AculaAudioModel, pairs: Pairs, cache: AudioCache, batch: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled window embeddings ``(N, D)`` and re-normalised pooled joint embeddings ``(N, J)``, cut and
    pooled by the model's own contract."""
    contract = model.config.audio
    model.eval()
    device = next(model.parameters()).device
    windows, owners = [], []
    for i, rec in enumerate(pairs.records):
        cut = cut_windows(np.asarray(cache.load(rec), dtype=np.float32), contract)
        windows.append(cut)
        owners += [i] * len(cut)
    flat = np.concatenate(windows)
    emb_parts, joint_parts = [], []
    for start in range(0, len(flat), batch):
        e, j = model(torch.from_numpy(flat[start : start + batch]).to(device), fft=True)
        emb_parts.append(e.float().cpu().numpy())
        joint_parts.append(j.float().cpu().numpy())
    emb, joint = np.concatenate(emb_parts), np.concatenate(joint_parts)
    owners_arr = np.asarray(owners)
    pooled_e = np.stack([pool_windows(emb[owners_arr == i], contract) for i in range(len(pairs.records))])
    pooled_j = np.stack([pool_windows(joint[owners_arr == i], contract) for i in range(len(pairs.records))])
    return pooled_e.astype(np.float32), l2_normalise(pooled_j)


def recall_at_k(queries: np.ndarray, gallery: np.ndarray, relevant: list[list[int]], k: int) -> float:
    """Fraction of queries with at least one relevant gallery row in their top k by inner product."""
    scores = queries @ gallery.T  # (N, M)
    k = min(k, gallery.shape[0])
    top = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k]
    hits = [bool(set(row.tolist()) & set(rel)) for row, rel in zip(top, relevant, strict=True)]
    return float(np.mean(hits))


def chance_recall(gallery_size: int, relevant: list[list[int]], k: int) -> float:
    """Expected recall@k of a random ranking: 1 - C(M - r, k) / C(M, k), averaged over queries."""
    m = gallery_size
    k = min(k, m)
    return float(np.mean([1 - comb(m - len(r), k) / comb(m, k) for r in relevant]))


def fit_ridge(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise ``x`` and fit ``y ~ x`` by ridge with the penalty chosen by leave-one-out CV."""
    from sklearn.linear_model import RidgeCV

    mean, std = x.mean(0), x.std(0) + 1e-6
    ridge = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit((x - mean) / std, y)
    return mean, std, ridge.coef_.T.astype(np.float32)  # (D, H)


def subset_relevant(pairs: Pairs, rows: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """For query ``rows``: the gallery (the text indices they use) and each query's positions in it."""
    used = sorted({t for r in rows for t in pairs.text_indices[r]})
    pos = {t: i for i, t in enumerate(used)}
    return np.asarray(used), [[pos[t] for t in pairs.text_indices[r]] for r in rows]


def retrieval_report(
    models: dict[str, AculaAudioModel],
    train_pairs: Pairs,
    test_pairs: Pairs,
    teacher_train: np.ndarray,
    teacher_test: np.ndarray,
    cache: AudioCache,
    k: int,
) -> dict[str, dict[str, float]]:
    """``{model name: {"ridge_all": r, "ridge_<dataset>": r, "joint_all": r, ..., "chance_all": c, ...}}``.

    ``teacher_train``/``teacher_test`` hold the teacher embedding of each text of ``*_pairs.texts``.
    """
    datasets = sorted({r.dataset for r in test_pairs.records})
    groups = {"all": np.arange(len(test_pairs.records))}
    for name in datasets:
        groups[name] = np.array([i for i, r in enumerate(test_pairs.records) if r.dataset == name])
    train_target = np.stack([teacher_train[ix].mean(0) for ix in train_pairs.text_indices])
    results: dict[str, dict[str, float]] = {}
    for model_name, model in models.items():
        train_emb, _ = embed_recordings(model, train_pairs, cache)
        test_emb, test_joint = embed_recordings(model, test_pairs, cache)
        mean, std, weight = fit_ridge(train_emb, train_target)
        ridge_q = l2_normalise(((test_emb - mean) / std) @ weight)
        ridge_g = l2_normalise(teacher_test)
        joint_g = None
        if model.text_head is not None:
            with torch.no_grad():
                device = next(model.parameters()).device
                joint_g = model.encode_text(torch.from_numpy(teacher_test).to(device)).float().cpu().numpy()
        row: dict[str, float] = {}
        for group, rows in groups.items():
            gallery, relevant = subset_relevant(test_pairs, rows)
            row[f"ridge_{group}"] = recall_at_k(ridge_q[rows], ridge_g[gallery], relevant, k)
            if joint_g is not None:
                row[f"joint_{group}"] = recall_at_k(test_joint[rows], joint_g[gallery], relevant, k)
            row[f"chance_{group}"] = chance_recall(len(gallery), relevant, k)
            row[f"queries_{group}"] = float(len(rows))
            row[f"gallery_{group}"] = float(len(gallery))
        results[model_name] = row
    return results
