"""Small but real model bundles for tests, built without torch.

:func:`build_tiny_bundle` writes a folder that satisfies the bundle contract exactly as ``acula export`` does:
an ONNX encoder made with ``onnx.helper`` (a fixed random Conv1d filter bank, log-magnitude, mean over time;
then a projection and L2 normalisation for the joint space), linear probes as ``.npz``, a ``reports.jsonl``
corpus and a FAISS flat index of the corpus's joint embeddings, all hashed into ``manifest.json`` by
:func:`service.bundle.write_manifest`. Everything is deterministic for a given seed, so tests can compare
numbers across processes (CLI against HTTP).

``TinyBundleOptions(gated=True)`` adds what the sound-type gate needs: probes with domains and purposes (see
:data:`GATED_PROBES`), a sound-type classifier built by hand so that a test knows what it will say (a
nearest-centroid classifier over the encoder's own embeddings of one steady tone per class:
:data:`SOUND_FAMILIES`, :func:`family_wav`), with a temperature, and an out-of-distribution reference of
the auscultation families' embeddings. :func:`downgrade_to_v1` rewrites a bundle's manifest as schema
version 1 (no domains), as older exports are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from acula.service.bundle import (
    MANIFEST_NAME,
    AudioContract,
    Calibration,
    EncoderSpec,
    Manifest,
    OutOfDistributionSpec,
    ProbeDomain,
    ProbeSpec,
    ReportIndexSpec,
    SoundTypeSpec,
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
    gated: bool = False  # probes with domains, a sound-type classifier and an out-of-distribution reference
    min_probability: float = 0.5  # the sound-type classifier's; near 1 makes every upload's type uncertain


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
    probes = [
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
    ]
    sound_type, ood = None, None
    if options.gated:
        probes, sound_type, ood = _gated_parts(out, options, rng, stats)
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
        probes=probes,
        sound_type=sound_type,
        out_of_distribution=ood,
        report_index=ReportIndexSpec(
            count=options.reports, dim=JOINT_DIM, deidentified=options.deidentified, text_source="template"
        ),
        text_side=TextSideSpec(max_tokens=32) if options.text_side else None,
    )
    return write_manifest(out, manifest)


# --- the sound-type gate -------------------------------------------------------------------------------
# One steady tone per sound-type class, at 0.3 amplitude with a little noise. The frequencies never fit a
# whole number of periods into the encoder's stride (160 samples at 8 kHz), so the embedding does not
# depend on the tone's phase, and the classes sit far apart (nearest-centroid margins of 5+ standard units).
SOUND_FAMILIES: dict[str, float] = {
    "heart": 61.3,
    "lung": 337.7,
    "cough": 1173.1,
    "breathing": 713.9,
    "not_auscultation": 2911.3,
}
AUSCULTATION = ("heart", "lung", "cough", "breathing")
SOUND_TYPE_TEMPERATURE = 2.0
MURMUR_TEMPERATURE = 1.5
OOD_K = 3


@dataclass(frozen=True)
class GatedProbe:
    """A probe of the gated bundle: task, kind, labels, purpose and domain (sound types, population)."""

    task: str
    kind: str
    labels: tuple[str, ...]
    sound_types: tuple[str, ...]
    population: str
    purpose: str = "diagnostic"
    bias: float | None = None  # a fixed answer: zero weights, this bias (quality probes)
    temperature: float | None = None


GATED_PROBES = (
    GatedProbe("murmur", "classification", ("normal", "abnormal"), ("heart",), "mixed", temperature=1.5),
    GatedProbe("valve", "multilabel", tuple(MULTI_LABELS), ("heart",), "adult"),
    GatedProbe("sound", "classification", tuple(CLASS_LABELS), ("lung",), "paediatric"),
    GatedProbe("covid", "classification", ("negative", "positive"), ("cough", "breathing"), "adult"),
    GatedProbe("age", "regression", (), ("lung",), "paediatric", purpose="demographic"),
    GatedProbe("sex", "classification", ("male", "female"), ("cough", "breathing"), "adult", "demographic"),
    # Quality probes with a fixed answer: every heart upload is "poor quality", every lung upload "usable".
    GatedProbe(
        "heart-quality", "classification", ("usable", "poor quality"), ("heart",), "mixed", "quality", 5.0
    ),
    GatedProbe(
        "lung-quality", "classification", ("usable", "poor quality"), ("lung",), "paediatric", "quality", -5.0
    ),
)
LUNG_SITES = ["posterior left", "posterior right"]


def family_recording(label: str, seconds: float, rate: int = 8000, seed: int = 0) -> np.ndarray:
    """The steady tone of one sound-type class (:data:`SOUND_FAMILIES`), random phase and noise by seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * SOUND_FAMILIES[label] * t + rng.uniform(0, 2 * np.pi))
    return (tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _wav(samples: np.ndarray, rate: int) -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def family_wav(label: str, seconds: float = 3.0, rate: int = 8000, seed: int = 100) -> bytes:
    """A WAV upload the gated bundle's classifier calls ``label`` with probability >= 0.8."""
    return _wav(family_recording(label, seconds, rate, seed), rate)


def noise_wav(seconds: float = 3.0, rate: int = 8000, seed: int = 0) -> bytes:
    """White noise: out of distribution for the gated bundle (far from every tone)."""
    samples = 0.3 * np.random.default_rng(seed).standard_normal(round(seconds * rate))
    return _wav(samples.astype(np.float32), rate)


def _family_embeddings(session: object, options: TinyBundleOptions, seeds: range) -> dict[str, np.ndarray]:
    window = options.window_seconds
    return {
        label: session.run(  # type: ignore[attr-defined]
            ["embedding"],
            {"waveform": np.stack([family_recording(label, window, options.sample_rate, s) for s in seeds])},
        )[0].astype(np.float64)
        for label in SOUND_FAMILIES
    }


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _gated_parts(
    out: Path, options: TinyBundleOptions, rng: np.random.Generator, stats: tuple[np.ndarray, np.ndarray]
) -> tuple[list[ProbeSpec], SoundTypeSpec, OutOfDistributionSpec]:
    """The sound-type classifier, the out-of-distribution reference and the probes with domains.

    Both the classifier and the reference are checked here on held-out tones (and noise), so a test that
    relies on what they say fails at construction if the tiny encoder ever stops separating the tones.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    train = _family_embeddings(session, options, range(8))
    held_out = _family_embeddings(session, options, range(100, 104))
    everything = np.concatenate(list(train.values()))
    mean, scale = everything.mean(axis=0), everything.std(axis=0) + 1e-6
    labels = list(SOUND_FAMILIES)
    centroids = np.stack([((train[label] - mean) / scale).mean(axis=0) for label in labels])
    # Nearest centroid as a linear map: -alpha/2 |z - c|^2 = alpha (z.c - |c|^2/2) + (same for every class).
    alpha = 0.35
    weight, bias = alpha * centroids, -alpha * (centroids**2).sum(axis=1) / 2
    for index, label in enumerate(labels):
        p = _softmax(((held_out[label] - mean) / scale) @ weight.T + bias)
        assert (
            (p.argmax(axis=1) == index).all() and (p[:, index] >= 0.8).all() and (p[:, index] <= 0.9999).all()
        ), (
            label,
            p[:, index],
        )
    temperature = SOUND_TYPE_TEMPERATURE  # stored logits are T times the designed ones; the service divides
    np.savez(
        out / "sound_type.npz",
        weight=weight * temperature,
        bias=bias * temperature,
        mean=mean,
        scale=scale,
        temperature=np.array([temperature]),
    )
    sound_type = SoundTypeSpec(
        labels=labels,
        min_probability=options.min_probability,
        metrics={"accuracy": 1.0},
        confusion=[[4 if i == j else 0 for j in range(len(labels))] for i in range(len(labels))],
        confusion_source="4 held-out tones per class",
        calibration=Calibration(temperature=[temperature], fitted_on=40, ece_before=0.2, ece_after=0.05),
    )

    def normalise(rows: np.ndarray) -> np.ndarray:
        z = (rows - mean) / scale
        return z / np.linalg.norm(z, axis=-1, keepdims=True)

    reference = normalise(np.concatenate([train[label] for label in AUSCULTATION]))
    row_types = np.concatenate([[label] * len(train[label]) for label in AUSCULTATION])

    def scores(rows: np.ndarray, of_type: str | None = None) -> np.ndarray:
        chosen = reference if of_type is None else reference[row_types == of_type]
        similarities = normalise(rows) @ chosen.T
        return 1.0 - np.sort(similarities, axis=1)[:, -OOD_K:].mean(axis=1)

    inside = np.concatenate([scores(held_out[label]) for label in AUSCULTATION])
    noise = np.stack(
        [
            np.random.default_rng(s).standard_normal(round(options.window_seconds * options.sample_rate))
            for s in range(3)
        ]
    )
    far = np.concatenate(
        [
            scores(session.run(["embedding"], {"waveform": (0.3 * noise).astype(np.float32)})[0]),
            scores(held_out["not_auscultation"]),
        ]
    )
    assert inside.max() < far.min(), (inside.max(), far.min())
    # Per sound type: halfway between the held-out tones of the type and every other family's tones, each
    # scored against that type's rows only (so a tone of another family is unlike the type's recordings).
    per_type = {}
    for label in AUSCULTATION:
        own = scores(held_out[label], label)
        others = np.concatenate(
            [scores(held_out[other], label) for other in SOUND_FAMILIES if other != label]
        )
        assert own.max() < others.min(), (label, own.max(), others.min())
        per_type[label] = float((own.max() + others.min()) / 2)
    np.savez(
        out / "ood_reference.npz",
        mean=mean.astype(np.float32),
        projection=np.diag(1.0 / scale).astype(np.float32),
        reference=reference.astype(np.float32),
        row_sound_types=row_types,
    )
    ood = OutOfDistributionSpec(
        k=OOD_K,
        threshold=float((inside.max() + far.min()) / 2),
        quantile=0.99,
        reference_count=len(reference),
        flag_rates={"held-out tones": 0.0, "white noise": 1.0},
        sound_type_thresholds=per_type,  # type: ignore[arg-type]
    )
    probes = []
    for probe in GATED_PROBES:
        file = f"probe_{probe.task}.npz"
        outputs = 1 if probe.kind == "regression" or len(probe.labels) == 2 else len(probe.labels)
        extra: dict[str, np.ndarray] = {}
        if probe.kind == "regression":
            extra = {"target_mean": np.array([8.0]), "target_scale": np.array([3.0])}
        if probe.temperature is not None:
            extra["temperature"] = np.array([probe.temperature])
        if probe.bias is not None:
            np.savez(out / file, weight=np.zeros((1, len(mean))), bias=np.array([probe.bias]))
        else:
            _write_probe(out / file, rng, outputs, stats, **extra)
        probes.append(
            ProbeSpec(
                task=probe.task,
                kind=probe.kind,  # type: ignore[arg-type]
                file=file,
                labels=list(probe.labels),
                unit="years" if probe.kind == "regression" else None,
                purpose=probe.purpose,  # type: ignore[arg-type]
                domain=ProbeDomain(
                    sound_types=list(probe.sound_types),  # type: ignore[arg-type]
                    population=probe.population,  # type: ignore[arg-type]
                    dataset="synthetic",
                    sites=LUNG_SITES if probe.task == "sound" else [],
                ),
                calibration=None
                if probe.temperature is None
                else Calibration(
                    temperature=[probe.temperature], fitted_on=40, ece_before=0.1, ece_after=0.03
                ),
            )
        )
    return probes, sound_type, ood


def downgrade_to_v1(bundle: Path) -> None:
    """Rewrite ``manifest.json`` as an older export wrote it: schema version 1, no probe purpose, domain or
    calibration, no sound-type classifier or out-of-distribution reference; the self-hash recomputed."""
    path = Path(bundle) / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["schema_version"] = 1
    for key in ("sound_type", "out_of_distribution"):
        spec = raw.pop(key, None)
        if spec is not None:
            raw["files"].pop(spec["file"], None)
    for probe in raw["probes"]:
        for key in ("purpose", "domain", "calibration"):
            probe.pop(key, None)
    placeholder = "0" * 64
    raw["manifest_sha256"] = placeholder
    text = json.dumps(raw, indent=2) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    path.write_text(text.replace(f'"manifest_sha256": "{placeholder}"', f'"manifest_sha256": "{digest}"'))


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
