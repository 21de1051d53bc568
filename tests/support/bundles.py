"""Small but real model bundles for tests, built without torch.

:func:`build_tiny_bundle` writes a folder that satisfies the bundle contract exactly as ``acula export`` does:
an ONNX encoder made with ``onnx.helper`` (a fixed random Conv1d filter bank, log-magnitude, mean over time;
then a projection and L2 normalisation for the joint space), linear probes as ``.npz``, a ``reports.jsonl``
corpus and a FAISS flat index of the corpus's joint embeddings, all hashed into ``manifest.json`` by
:func:`service.bundle.write_manifest`. Everything is deterministic for a given seed, so tests can compare
numbers across processes (CLI against HTTP).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from acula.service.bundle import (
    AudioContract,
    EncoderSpec,
    Manifest,
    ProbeSpec,
    ReportIndexSpec,
    TensorSpec,
    TextSideSpec,
    write_manifest,
)

EMBEDDING_DIM = 16
JOINT_DIM = 8
KERNEL = 400
STRIDE = 160

CLASS_LABELS = ["normal", "crackle", "wheeze"]
MULTI_LABELS = ["AS", "AR", "MR"]


@dataclass(frozen=True)
class TinyBundleOptions:
    """Knobs a test may turn; the defaults give 2-second windows at 8 kHz with 1-second hop."""

    sample_rate: int = 8000
    window_seconds: float = 2.0
    hop_seconds: float = 1.0
    min_seconds: float = 0.5
    reports: int = 40
    deidentified: bool = True
    seed: int = 0
    name: str = "acula-tiny"
    version: str = "0.0.1-test"
    text_side: bool = False  # add a tokenizer and ONNX text encoder (free-text report search)
    channels: int = 16  # embedding dimension; raise it (and lower stride) to emulate a heavier encoder
    stride: int = 160


def build_encoder(path: Path, seed: int = 0, channels: int = EMBEDDING_DIM, stride: int = STRIDE) -> None:
    """``waveform (batch, samples)`` -> ``embedding (batch, channels)``, unit-length ``joint (batch, 8)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    kernel = (rng.standard_normal((channels, 1, KERNEL)) / np.sqrt(KERNEL)).astype(np.float32)
    projection = rng.standard_normal((channels, JOINT_DIM)).astype(np.float32)
    initialisers = [
        numpy_helper.from_array(kernel, "kernel"),
        numpy_helper.from_array(projection, "projection"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_channel"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_time"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["waveform", "axis_channel"], ["x1"]),  # (B, S) -> (B, 1, S)
        helper.make_node("Conv", ["x1", "kernel"], ["x2"], strides=[stride]),  # -> (B, C, T)
        helper.make_node("Abs", ["x2"], ["x3"]),
        helper.make_node("Add", ["x3", "one"], ["x4"]),
        helper.make_node("Log", ["x4"], ["x5"]),
        helper.make_node("ReduceMean", ["x5", "axis_time"], ["embedding"], keepdims=0),  # -> (B, C)
        helper.make_node("MatMul", ["embedding", "projection"], ["x6"]),  # -> (B, 8)
        helper.make_node("LpNormalization", ["x6"], ["joint"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_encoder",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", "samples"])],
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", channels]),
            helper.make_tensor_value_info("joint", TensorProto.FLOAT, ["batch", JOINT_DIM]),
        ],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="acula-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


TEXT_VOCAB = ["[UNK]", "[PAD]"] + sorted(
    {
        "normal",
        "crackle",
        "crackles",
        "wheeze",
        "wheezes",
        "sounds",
        "heard",
        "at",
        "the",
        "left",
        "lower",
        "lobe",
    }
)


def build_text_side(bundle: Path, seed: int = 0) -> None:
    """``tokenizer.json`` (word level) and ``text_encoder.onnx``: mean of token vectors under the attention
    mask, L2-normalised into the joint space (``input_ids``, ``attention_mask`` -> ``joint``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(TEXT_VOCAB)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(bundle / "tokenizer.json"))
    table = np.random.default_rng(seed + 7).standard_normal((len(TEXT_VOCAB), JOINT_DIM)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),  # (B, T) -> (B, T, 8)
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis_last"], ["mask3"]),  # (B, T, 1)
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis_tokens"], ["summed"], keepdims=0),  # (B, 8)
        helper.make_node("LpNormalization", ["summed"], ["joint"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_text_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("joint", TensorProto.FLOAT, ["batch", JOINT_DIM])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_last"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_tokens"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="acula-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(bundle / "text_encoder.onnx"))


def _write_probe(
    path: Path,
    rng: np.random.Generator,
    outputs: int,
    stats: tuple[np.ndarray, np.ndarray],
    **extra: np.ndarray,
) -> None:
    """Random weights on standardised embeddings (mean and scale measured on synthetic recordings)."""
    np.savez(
        path,
        weight=(rng.standard_normal((outputs, len(stats[0]))) / np.sqrt(len(stats[0]))).astype(np.float32),
        bias=(0.1 * rng.standard_normal(outputs)).astype(np.float32),
        mean=stats[0].astype(np.float32),
        scale=stats[1].astype(np.float32),
        **extra,
    )


def _synthetic_recording(rng: np.random.Generator, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    tone = np.sin(2 * np.pi * rng.uniform(40, 600) * t)
    return (0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def _write_reports(
    bundle: Path, options: TinyBundleOptions, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Embed short synthetic recordings with the encoder itself, so the index is in the real joint space.

    Returns the mean and standard deviation of their window embeddings, for the probes' standardisation.
    """
    import faiss
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    window = round(options.window_seconds * options.sample_rate)
    batch = np.stack(
        [
            _synthetic_recording(rng, options.sample_rate, window / options.sample_rate)
            for _ in range(options.reports)
        ]
    )
    embedding, joint = session.run(["embedding", "joint"], {"waveform": batch})
    index = faiss.IndexFlatIP(JOINT_DIM)
    index.add(np.ascontiguousarray(joint, dtype=np.float32))
    faiss.write_index(index, str(bundle / "reports.faiss"))
    with (bundle / "reports.jsonl").open("w") as handle:
        for i in range(options.reports):
            label = CLASS_LABELS[i % len(CLASS_LABELS)]
            record = {
                "id": f"tiny-{i:04d}",
                "dataset": "synthetic",
                "labels": {"sound": label},
                "text": f"Synthetic test report {i}: {label} sounds heard at the left lower lobe.",
            }
            handle.write(json.dumps(record) + "\n")
    return embedding.mean(axis=0), embedding.std(axis=0) + 1e-6


def build_tiny_bundle(out: Path, options: TinyBundleOptions | None = None) -> Manifest:
    """Write a complete, verifiable bundle into ``out`` (created if needed) and return its manifest."""
    options = options or TinyBundleOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(options.seed)
    build_encoder(out / "encoder.onnx", seed=options.seed, channels=options.channels, stride=options.stride)
    stats = _write_reports(out, options, rng)
    _write_probe(out / "probe_sound.npz", rng, len(CLASS_LABELS), stats)
    _write_probe(out / "probe_disease.npz", rng, len(MULTI_LABELS), stats)
    _write_probe(
        out / "probe_age.npz", rng, 1, stats, target_mean=np.array([40.0]), target_scale=np.array([15.0])
    )
    if options.text_side:
        build_text_side(out, seed=options.seed)
    manifest = Manifest(
        name=options.name,
        version=options.version,
        description="Tiny deterministic bundle built by tests/support/bundles.py; not a trained model.",
        audio=AudioContract(
            sample_rate=options.sample_rate,
            window_seconds=options.window_seconds,
            hop_seconds=options.hop_seconds,
            pooling="mean",
            min_seconds=options.min_seconds,
        ),
        encoder=EncoderSpec(
            input=TensorSpec(name="waveform", shape=["batch", "samples"]),
            embedding=TensorSpec(name="embedding", shape=["batch", options.channels]),
            joint=TensorSpec(name="joint", shape=["batch", JOINT_DIM]),
        ),
        probes=[
            ProbeSpec(
                task="sound",
                kind="classification",
                file="probe_sound.npz",
                labels=CLASS_LABELS,
                metrics={"auroc": 0.5},
                description="Lung sound class (synthetic).",
            ),
            ProbeSpec(task="disease", kind="multilabel", file="probe_disease.npz", labels=MULTI_LABELS),
            ProbeSpec(task="age", kind="regression", file="probe_age.npz", unit="years"),
        ],
        report_index=ReportIndexSpec(
            count=options.reports, dim=JOINT_DIM, deidentified=options.deidentified, text_source="template"
        ),
        text_side=TextSideSpec(max_tokens=32) if options.text_side else None,
    )
    return write_manifest(out, manifest)


def write_wav(path: Path, seconds: float, rate: int = 8000, seed: int = 1, channels: int = 1) -> Path:
    """A real 16-bit WAV file (tone plus noise) for upload tests."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    mono = _synthetic_recording(rng, rate, seconds)
    data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    sf.write(str(path), data, rate, subtype="PCM_16")
    return path


def wav_bytes(seconds: float, rate: int = 8000, seed: int = 1) -> bytes:
    import io

    import soundfile as sf

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    sf.write(buffer, _synthetic_recording(rng, rate, seconds), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified tiny bundle folder, built once per test session (about 0.3 s). Do not modify it: copy it."""
    path = tmp_path_factory.mktemp("bundles") / "acula-tiny"
    build_tiny_bundle(path)
    return path
