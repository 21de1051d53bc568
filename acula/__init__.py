"""acula: auscultation audio encoders aligned to clinical language (AcuLa), trained and served.

The Python API (torch-free)::

    import acula
    model = acula.load("models/acula-default")     # verifies every file's SHA-256 first
    answer = model.predict("recording.wav")         # the same PredictResponse as POST /predict
    vector = model.embed("recording.wav").embedding
    hits = model.similar_reports("recording.wav", k=5).reports

Packages: :mod:`acula.service` (HTTP service, inference core, audio decoding, the bundle contract; never
imports torch) and :mod:`acula.training` (datasets, reports, training, benchmark, export; PyTorch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acula.service import __version__

if TYPE_CHECKING:
    from acula.service.model import AculaModel

__all__ = ["AculaModel", "__version__", "load"]


def load(bundle: Any = None, **settings: Any) -> AculaModel:
    """Open a model bundle (default ``models/acula-default``); see :class:`acula.service.model.AculaModel`."""
    from acula.service.model import AculaModel

    return AculaModel.load(bundle, **settings)


def __getattr__(name: str) -> Any:
    if name == "AculaModel":  # imported on first use: `import acula` stays light (no onnxruntime, FAISS)
        from acula.service.model import AculaModel

        return AculaModel
    raise AttributeError(f"module 'acula' has no attribute {name!r}")
