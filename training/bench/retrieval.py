"""Audio -> report retrieval and zero-shot classification in the joint space, on the test side only.

Retrieval: each test-side recording queries the gallery of the distinct report texts written for the test-side
recordings of the same task; *recall@k* is the share of queries whose OWN report is among the top k, and
*label precision@5* the share of the top five reports whose label equals the query's, compared with the
*label prior* (the same share for a random ranking). Recall checks that the audio finds its own description;
label precision checks that it finds clinically similar ones, which is what a report search is used for.

Zero-shot: each class gets a description (``Task.prompts``) embedded by the teacher through the model's text
projection (or a bundle's ONNX text side); a recording's score for a class is its cosine similarity to the
class description, and AUROC is computed from those scores with no probe at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from acula.training.bench.metrics import TaskKind, score_task


@dataclass
class Gallery:
    """Distinct report texts, each with its label; ``relevant[q]`` = gallery rows of query q's own reports."""

    texts: list[str]
    labels: list[str]
    relevant: list[list[int]]


def build_gallery(query_reports: list[list[str]], query_labels: list[str]) -> Gallery:
    """De-duplicate texts (identical texts are one gallery row, relevant to every query that owns it).

    A text shared by recordings of different labels takes the label of its first owner; template reports
    state the label, so this does not happen in practice, and :func:`label_precision_at_k` says so if it does.
    """
    index: dict[str, int] = {}
    texts: list[str] = []
    labels: list[str] = []
    relevant: list[list[int]] = []
    for reports, label in zip(query_reports, query_labels, strict=True):
        own = []
        for text in reports:
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
                labels.append(label)
            own.append(index[text])
        relevant.append(sorted(set(own)))
    return Gallery(texts, labels, relevant)


def ranking(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Gallery rows by decreasing inner product (cosine for unit rows), ``(Q, G)``; stable on ties."""
    return np.argsort(-(queries @ gallery.T), axis=1, kind="stable")


def recall_at_k(order: np.ndarray, relevant: list[list[int]], k: int) -> float:
    """Share of queries with at least one of their own rows among the first k."""
    top = order[:, :k]
    return float(
        np.mean([bool(set(row.tolist()) & set(rel)) for row, rel in zip(top, relevant, strict=True)])
    )


def label_precision_at_k(
    order: np.ndarray, query_labels: list[str], gallery_labels: list[str], k: int
) -> float:
    """Mean over queries of the share of the top k gallery rows whose label equals the query's."""
    labels = np.asarray(gallery_labels)
    top = labels[order[:, :k]]
    return float(np.mean(top == np.asarray(query_labels)[:, None]))


def label_prior(query_labels: list[str], gallery_labels: list[str]) -> float:
    """Expected label precision of a random ranking: mean share of the gallery with the query's label."""
    labels = np.asarray(gallery_labels)
    return float(np.mean([np.mean(labels == q) for q in query_labels]))


def chance_recall(gallery_size: int, relevant: list[list[int]], k: int) -> float:
    """Expected recall@k of a random ranking: 1 - C(G - r, k) / C(G, k), averaged over queries."""
    from math import comb

    k = min(k, gallery_size)
    return float(np.mean([1 - comb(gallery_size - len(r), k) / comb(gallery_size, k) for r in relevant]))


def retrieval_metrics(
    audio_joint: np.ndarray,
    text_joint: np.ndarray,
    gallery: Gallery,
    query_labels: list[str],
    ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@k (with chance), label precision@5 and the label prior for unit-norm query/gallery rows."""
    order = ranking(audio_joint, text_joint)
    out: dict[str, float] = {"queries": float(len(audio_joint)), "gallery": float(len(gallery.texts))}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(order, gallery.relevant, k)
        out[f"chance_recall@{k}"] = chance_recall(len(gallery.texts), gallery.relevant, k)
    out["label_precision@5"] = label_precision_at_k(order, query_labels, gallery.labels, 5)
    out["label_prior"] = label_prior(query_labels, gallery.labels)
    return out


def zero_shot_scores(kind: TaskKind, audio_joint: np.ndarray, prompt_joint: np.ndarray) -> np.ndarray:
    """Cosine similarities to the class descriptions -> the score layout of the task kind.

    binary: sim(positive) - sim(negative); multiclass: softmax over classes (temperature 0.07, CLIP's
    initial value; AUROC only needs the order); multilabel: per label sim(present) - sim(absent), with
    ``prompt_joint`` ordered (absent_0, present_0, absent_1, present_1, ...).
    """
    sims = audio_joint @ prompt_joint.T  # (N, P)
    if kind == "binary":
        return sims[:, 1] - sims[:, 0]
    if kind == "multiclass":
        logits = sims / 0.07
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)
    if kind == "multilabel":
        return sims[:, 1::2] - sims[:, 0::2]
    raise ValueError(f"zero-shot needs a classification task, not {kind!r}")


def zero_shot_auroc(
    kind: TaskKind, y: np.ndarray, audio_joint: np.ndarray, prompt_joint: np.ndarray
) -> float:
    return score_task(kind, y, zero_shot_scores(kind, audio_joint, prompt_joint))
