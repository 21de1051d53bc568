"""Retrieval and zero-shot metrics on hand-built cases whose answers can be worked out on paper."""

from __future__ import annotations

import numpy as np
import pytest

from acula.training.bench.retrieval import (
    build_gallery,
    chance_recall,
    label_precision_at_k,
    label_prior,
    ranking,
    recall_at_k,
    retrieval_metrics,
    zero_shot_auroc,
    zero_shot_scores,
)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_gallery_deduplicates_texts_and_keeps_every_owner():
    gallery = build_gallery([["a", "b"], ["b"], ["c"]], ["x", "x", "y"])
    assert gallery.texts == ["a", "b", "c"]
    assert gallery.relevant == [[0, 1], [1], [2]]
    assert gallery.labels == ["x", "x", "y"]


def test_recall_counts_own_report_in_top_k():
    # Query i is closest to gallery row i except query 2, whose own row is ranked third.
    gallery = np.eye(4)
    queries = _unit(np.array([[1, 0.1, 0, 0], [0, 1, 0.1, 0], [0.5, 0.4, 0.3, 0], [0, 0, 0, 1.0]]))
    order = ranking(queries, gallery)
    relevant = [[0], [1], [2], [3]]
    assert recall_at_k(order, relevant, 1) == 0.75
    assert recall_at_k(order, relevant, 2) == 0.75
    assert recall_at_k(order, relevant, 3) == 1.0


def test_label_precision_and_prior():
    order = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    gallery_labels = ["n", "n", "a", "a"]
    assert label_precision_at_k(order, ["n", "n"], gallery_labels, 2) == 0.5  # query 1 gets the two 'a' rows
    assert label_precision_at_k(order, ["n", "a"], gallery_labels, 2) == 1.0
    assert label_prior(["n", "a"], gallery_labels) == 0.5
    assert label_prior(["n"], ["n", "a", "a", "a"]) == 0.25


def test_chance_recall_matches_simulation():
    rng = np.random.default_rng(0)
    relevant = [[0], [1, 2]]
    hits = []
    for _ in range(20000):
        order = np.stack([rng.permutation(10), rng.permutation(10)])
        hits.append(recall_at_k(order, relevant, 3))
    assert chance_recall(10, relevant, 3) == pytest.approx(np.mean(hits), abs=0.01)
    assert chance_recall(10, [[0]], 3) == pytest.approx(0.3)


def test_perfect_and_random_joint_spaces():
    rng = np.random.default_rng(1)
    texts = _unit(rng.normal(size=(50, 16)))
    labels = ["a" if i % 2 else "b" for i in range(50)]
    gallery = build_gallery([[f"t{i}"] for i in range(50)], labels)
    perfect = retrieval_metrics(texts, texts, gallery, labels)
    assert perfect["recall@1"] == 1.0 and perfect["recall@10"] == 1.0
    noise = _unit(rng.normal(size=(50, 16)))
    random = retrieval_metrics(noise, texts, gallery, labels)
    assert random["recall@1"] < 0.15
    assert random["chance_recall@10"] == pytest.approx(0.2)
    assert random["label_prior"] == 0.5


def test_zero_shot_binary_multiclass_multilabel():
    prompts = np.eye(3)[:2]  # negative along axis 0, positive along axis 1
    audio = _unit(np.array([[1.0, 0.1, 0], [0.2, 1.0, 0], [0.9, 0.3, 0], [0.1, 0.8, 0.5]]))
    assert zero_shot_auroc("binary", np.array([0, 1, 0, 1]), audio, prompts) == 1.0
    assert zero_shot_auroc("binary", np.array([1, 0, 1, 0]), audio, prompts) == 0.0
    probs = zero_shot_scores("multiclass", audio, np.eye(3))
    assert np.allclose(probs.sum(1), 1.0)
    assert probs.argmax(1).tolist() == [0, 1, 0, 1]
    pair_prompts = np.eye(3)[[0, 1, 0, 2]]  # label 0: absent=e0, present=e1; label 1: absent=e0, present=e2
    scores = zero_shot_scores("multilabel", audio, pair_prompts)
    assert scores.shape == (4, 2)
    assert scores[1, 0] > 0 > scores[0, 0]
