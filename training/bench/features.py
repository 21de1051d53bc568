"""Frozen features per recording, for every row of the benchmark, each computed once and kept on disk.

A *feature source* turns a recording into a pooled embedding (what the probes read) and, for encoders with a
joint space, a pooled L2-normalised joint embedding (what retrieval and zero-shot read). Sources:

- :class:`TorchEncoder`: an ``acula`` checkpoint, or the same architecture with random weights;
- :class:`BundleEncoder`: a model bundle, through the service's own ONNX pipeline;
- ``OpenSmileSource`` (:mod:`training.bench.opensmile_features`): eGeMAPSv02 functionals.

Encoders cut audio with the ONE windowing policy of the service (``acula.service.core.windowing``) and the
one contract: the bundle's manifest, or a checkpoint's ``ModelConfig.audio`` (which its bundle's manifest
would copy). Features are cached as ``.npy`` under
``<cache>/bench-features/<source key>/<dataset>/<recording id>.npy`` where the key hashes the weights and the
contract, so a retrained checkpoint never reads stale features, and every task sharing a recording reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from acula.service.bundle import AudioContract
from acula.service.core.windowing import cut_windows, l2_normalise, pool_windows
from acula.training.data.records import Recording


def recording_key(rec: Recording) -> str:
    """``dataset/recording_id``: unique across datasets; the row key of every feature table."""
    return f"{rec.dataset}/{rec.recording_id}"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class FeatureTable:
    """Rows keyed by :func:`recording_key`; ``joint`` is None for sources without a joint space."""

    keys: list[str]
    embedding: np.ndarray  # (N, D)
    joint: np.ndarray | None = None  # (N, J), unit rows
    failed: dict[str, str] = field(default_factory=dict)  # key -> why no features

    def rows(self, keys: list[str]) -> np.ndarray:
        index = {k: i for i, k in enumerate(self.keys)}
        return np.asarray([index[k] for k in keys], dtype=int)


class FeatureCache:
    """One folder per source key; one ``<id>.npy`` (embedding) and ``<id>.joint.npy`` per recording."""

    def __init__(self, root: Path, source_key: str, description: str) -> None:
        self.dir = Path(root) / "bench-features" / source_key
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "source.txt").write_text(description + "\n")

    def _path(self, key: str, suffix: str) -> Path:
        dataset, rec_id = key.split("/", 1)
        return self.dir / dataset / f"{rec_id.replace('/', '_')}{suffix}"

    def get(self, key: str, with_joint: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
        path = self._path(key, ".npy")
        joint_path = self._path(key, ".joint.npy")
        if not path.is_file() or (with_joint and not joint_path.is_file()):
            return None
        joint = np.load(joint_path, allow_pickle=False) if with_joint else None
        return np.load(path, allow_pickle=False), joint

    def put(self, key: str, embedding: np.ndarray, joint: np.ndarray | None) -> None:
        for suffix, array in ((".npy", embedding), (".joint.npy", joint)):
            if array is None:
                continue
            path = self._path(key, suffix)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.npy")
            np.save(tmp, np.asarray(array, dtype=np.float32))
            tmp.replace(path)  # atomic: an interrupted run never leaves a half-written feature


class FeatureSource(Protocol):
    name: str  # row label in the tables
    key: str  # cache identity: changes whenever the features would
    has_joint: bool

    def extract(self, records: list[Recording], cache_root: Path, progress: bool) -> FeatureTable: ...


class WindowEncoder:
    """Shared extraction loop: cached lookup, decode at the contract rate, cut, encode in batches, pool."""

    name: str
    key: str
    has_joint: bool = True
    contract: AudioContract
    batch_windows: int = 64

    def describe(self) -> str:
        return f"{self.name} | {self.contract.model_dump_json()}"

    def encode_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def extract(self, records: list[Recording], cache_root: Path, progress: bool = True) -> FeatureTable:
        from tqdm import tqdm

        from acula.training.train.audio_dataset import AudioCache

        cache = FeatureCache(cache_root, self.key, self.describe())
        audio = AudioCache(cache_root, self.contract.sample_rate)
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        failed: dict[str, str] = {}
        pending: list[tuple[str, np.ndarray]] = []  # (key, windows) waiting for a full batch

        def flush() -> None:
            if not pending:
                return
            flat = np.concatenate([w for _, w in pending])
            emb, joint = self.encode_windows(flat)
            start = 0
            for key, windows in pending:
                stop = start + len(windows)
                pooled = pool_windows(emb[start:stop], self.contract)
                pooled_joint = l2_normalise(pool_windows(joint[start:stop], self.contract))
                cache.put(key, pooled, pooled_joint)
                found[key] = (pooled, pooled_joint)
                start = stop
            pending.clear()

        for rec in tqdm(records, desc=f"features {self.name}", disable=not progress, leave=False):
            key = recording_key(rec)
            cached = cache.get(key, with_joint=True)
            if cached is not None and cached[1] is not None:  # with_joint: the joint is always there
                found[key] = (cached[0], cached[1])
                continue
            try:
                samples = np.asarray(audio.load(rec), dtype=np.float32)
            except Exception as exc:  # one unreadable file drops one recording, and the table says so
                failed[key] = f"{type(exc).__name__}: {exc}"
                continue
            pending.append((key, cut_windows(samples, self.contract)))
            if sum(len(w) for _, w in pending) >= self.batch_windows:
                flush()
        flush()
        keys = [recording_key(r) for r in records if recording_key(r) in found]
        if not keys:
            raise RuntimeError(f"{self.name}: no recording could be embedded ({len(failed)} failed)")
        embedding = np.stack([found[k][0] for k in keys]).astype(np.float32)
        joint = np.stack([found[k][1] for k in keys]).astype(np.float32)
        return FeatureTable(keys, embedding, joint, failed)


class TorchEncoder(WindowEncoder):
    """An ``AculaAudioModel`` in eval mode, from a checkpoint or randomly initialised."""

    def __init__(self, name: str, model, key: str) -> None:
        self.name = name
        self.model = model.eval()
        self.key = key
        self.contract: AudioContract = model.config.audio  # as the bundle exported from it would cut
        self.text_head = model.text_head
        self.teacher_spec: dict | None = None  # TeacherSpec fields; None = the packaged default teacher

    @classmethod
    def from_checkpoint(cls, path: Path, name: str | None = None):
        from acula.training.nets.factory import load_checkpoint, read_checkpoint

        path = Path(path)
        payload = read_checkpoint(path)
        model = load_checkpoint(path)
        contract = model.config.audio.model_dump_json()
        key = hashlib.sha256(f"ckpt|{file_digest(path)}|{contract}".encode()).hexdigest()[:20]
        encoder = cls(name or default_name(path), model, key)
        run_config = payload.get("run_config")
        if isinstance(run_config, dict) and isinstance(run_config.get("teacher"), dict):
            encoder.teacher_spec = run_config["teacher"]  # the teacher its text head was trained against
        return encoder

    @classmethod
    def random_init(cls, config, seed: int = 0, name: str = "random-init"):
        """The same architecture with random weights: the floor every trained row must clear."""
        import torch

        from acula.training.nets.factory import build_model

        torch.manual_seed(seed)
        model = build_model(config, load_weights=False)  # the architecture only, never pretrained weights
        text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
        key = hashlib.sha256(f"random|{text}|{seed}|{torch.__version__}".encode()).hexdigest()
        return cls(name, model, key[:20])

    def encode_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        model = self.model
        embeddings, joints = [], []
        with torch.no_grad():
            for start in range(0, len(windows), self.batch_windows):
                batch = torch.from_numpy(windows[start : start + self.batch_windows])
                # The FFT front-end: the exported conv1d DFT's log-mel within 1e-4, at a fraction of the cost.
                emb, joint = model(batch, fft=True)  # (B, S) -> (B, D'), (B, J)
                embeddings.append(emb.numpy())
                joints.append(joint.numpy())
        return np.concatenate(embeddings), np.concatenate(joints)

    def embed_text(self, teacher_vectors: np.ndarray) -> np.ndarray | None:
        """Teacher embeddings -> joint space through the model's text head; None for SSL-only models."""
        import torch

        if self.text_head is None:
            return None
        with torch.no_grad():
            out = self.model.encode_text(torch.from_numpy(np.asarray(teacher_vectors, dtype=np.float32)))
        return l2_normalise(out.numpy())


class BundleEncoder(WindowEncoder):
    """A model bundle through ``service.core.pipeline.InferencePipeline`` (ONNX, the manifest's contract)."""

    def __init__(self, bundle_dir: Path, name: str | None = None, threads: int = 2) -> None:
        from acula.service.core.pipeline import InferencePipeline

        self.pipeline = InferencePipeline.from_bundle(
            Path(bundle_dir), provider="cpu", intra_op_threads=threads, max_batch_size=self.batch_windows
        )
        manifest = self.pipeline.manifest
        self.name = name or manifest.name
        self.contract = manifest.audio
        digest = manifest.files[manifest.encoder.file]
        self.key = hashlib.sha256(f"bundle|{digest}|{self.contract.model_dump_json()}".encode()).hexdigest()[
            :20
        ]

    def encode_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.pipeline.encode(windows)

    def embed_texts(self, texts: list[str]) -> np.ndarray | None:
        """Report texts -> joint space through the bundle's ONNX text side; None when it has none."""
        if self.pipeline.text_encoder is None:
            return None
        return np.stack([self.pipeline.text_encoder.embed(t) for t in texts]).astype(np.float32)


def default_name(path: Path) -> str:
    """``runs/ssl/final.pt`` -> ``ssl``; ``models/acula-default`` -> ``acula-default``."""
    path = Path(path)
    if path.is_dir():
        return path.name
    return path.parent.name if path.stem in ("final", "last", "best") else path.stem
