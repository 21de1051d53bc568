"""acula inference service: FastAPI + onnxruntime + FAISS. Never imports torch."""

__version__ = "0.1.0"
