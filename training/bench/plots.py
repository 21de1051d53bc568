"""Figures for the benchmark: ROC curves and reliability diagrams per task, and a 2-D map of each encoder's
test-side embeddings.

Matplotlib runs headless (Agg). Every figure is a PNG under ``<out>/plots/`` and is named in results.json, so
a reader of the markdown table can open the curve behind any number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from acula.training.bench.metrics import TaskKind


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_figure(
    path: Path, title: str, class_names: list[str], curves: dict[str, tuple[np.ndarray, np.ndarray]]
) -> Path:
    """One panel per class column (binary: one panel), one curve per encoder.

    ``curves[encoder] = (y, scores)`` with ``y`` one-hot ``(n, C)`` and ``scores`` ``(n, C)``.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    panels = len(class_names)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4), squeeze=False)
    for j, name in enumerate(class_names):
        ax = axes[0, j]
        for encoder, (y, scores) in curves.items():
            if len(np.unique(y[:, j])) < 2:
                continue
            fpr, tpr, _ = roc_curve(y[:, j], scores[:, j])
            ax.plot(fpr, tpr, label=f"{encoder} ({roc_auc_score(y[:, j], scores[:, j]):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_title(name if panels > 1 else title, fontsize=10)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    if panels > 1:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def project_2d(x: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """Standardise, PCA to at most 50 dimensions, then t-SNE (or the first two PCs for ``pca``)."""
    from sklearn.decomposition import PCA

    z = (x - x.mean(0)) / np.where(x.std(0) < 1e-8, 1.0, x.std(0))
    pcs = PCA(n_components=min(50, z.shape[1], len(z)), random_state=seed).fit_transform(z)
    if method == "pca" or len(z) < 10:
        return pcs[:, :2]
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(5, (len(z) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(pcs)


def embedding_map(path: Path, title: str, points: np.ndarray, labels: list[str] | np.ndarray) -> Path:
    """Scatter of 2-D ``points`` coloured by label (categorical) or by value (a float array)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if isinstance(labels, np.ndarray) and labels.dtype.kind == "f":
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, s=8, cmap="viridis")
        fig.colorbar(sc, ax=ax)
    else:
        names = sorted(set(labels))
        labels_arr = np.asarray(labels)
        for name in names:
            rows = labels_arr == name
            ax.scatter(points[rows, 0], points[rows, 1], s=8, label=f"{name} ({rows.sum()})", alpha=0.8)
        ax.legend(fontsize=7, markerscale=2)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_figure(
    path: Path,
    title: str,
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    kind: TaskKind,
) -> Path:
    """Reliability diagram: accuracy against confidence of the predicted class, per equal-width bin.

    ``curves[encoder] = (y, scores, uncalibrated scores or None)`` in the benchmark's layout; the
    calibrated curve is solid, the same probe before calibration dotted, ECE in the legend.
    """
    from acula.training.bench.metrics import expected_calibration_error, reliability

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for encoder, (y, scores, raw) in curves.items():
        for values, style, what in ((scores, "-", "calibrated"), (raw, ":", "before")):
            if values is None:
                continue
            confidence, accuracy, count = reliability(kind, y, values)
            filled = count > 0
            ece = expected_calibration_error(kind, y, values)
            ax.plot(
                confidence[filled],
                accuracy[filled],
                style,
                marker="o",
                markersize=3,
                label=f"{encoder} {what} (ECE {ece:.3f})",
            )
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("share correct")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
