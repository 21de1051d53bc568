"""The model bundle: the only contract between training and the service.

A bundle is a folder holding ``manifest.json`` and the files it names. The manifest records the SHA-256 of
every file, the audio contract (sample rate and windowing policy), the ONNX input/output names and shapes, the
probes, the report index and provenance. :func:`load_bundle` verifies every hash before anything is used, so a
truncated copy or a tampered file is refused with an error that names the file. ``manifest.json`` carries
the SHA-256 of its own bytes (computed with that value zeroed), so an edit to the manifest itself, which
would otherwise change the audio contract or the probe labels unnoticed, is refused the same way.

Nothing in a bundle is pickled: ONNX, JSON, ``.npz`` read with ``allow_pickle=False`` and FAISS index files.
This module is torch-free: training imports it to write bundles, the service to read them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 2
# Version 1 predates probe domains, calibration, the sound-type classifier and the out-of-distribution
# reference: it still loads, every probe's domain "unknown" (see _upgrade_v1), so older bundles keep serving.
READABLE_SCHEMA_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
DEFAULT_BUNDLE = Path("models/acula-default")
_SELF_HASH_PLACEHOLDER = "0" * 64
_SELF_HASH = re.compile(rb'"manifest_sha256": "([0-9a-f]{64})"')


def missing_bundle_message(bundle: Path) -> str:
    """What to tell a user whose bundle folder does not exist: how to build one."""
    if Path(bundle).resolve() == DEFAULT_BUNDLE.resolve():
        return (
            f"no default bundle exists yet at {bundle}: build one with `make train-default` "
            "(or `acula export --checkpoint CKPT --reports reports.jsonl --out models/acula-default`)"
        )
    return f"bundle folder {bundle} does not exist (build one with `acula export` or `make train-default`)"


class BundleError(Exception):
    """A bundle cannot be used; the message says which file and why."""

    def __init__(self, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AudioContract(_Strict):
    """How audio is cut before it reaches the encoder; obeyed by training, the CLI and the service alike."""

    sample_rate: int = Field(16000, ge=1000, le=384000, description="Rate the encoder expects, in Hz.")
    window_seconds: float = Field(4.0, gt=0, description="Length of one encoder window.")
    hop_seconds: float = Field(4.0, gt=0, description="Step between window starts.")
    pooling: Literal["mean", "max"] = Field(
        "mean", description="How window embeddings become one per recording."
    )
    min_seconds: float = Field(0.5, ge=0, description="Shorter recordings are refused.")

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_seconds * self.sample_rate)


class TensorSpec(_Strict):
    """One ONNX input or output: name and shape, strings for dynamic axes (``"batch"``, ``"samples"``)."""

    name: str
    shape: list[int | str]
    dtype: Literal["float32"] = "float32"


class EncoderSpec(_Strict):
    """The ONNX encoder: waveform in, window embedding and L2-normalised joint embedding out."""

    file: str = "encoder.onnx"
    input: TensorSpec
    embedding: TensorSpec = Field(description="Window embedding used by the probes.")
    joint: TensorSpec = Field(description="L2-normalised joint-space embedding used for retrieval.")
    opset: int = 18


SoundType = Literal["heart", "lung", "cough", "breathing"]
SOUND_TYPES: tuple[SoundType, ...] = ("heart", "lung", "cough", "breathing")
NOT_AUSCULTATION = "not_auscultation"  # the sound-type classifier's extra class: speech, music, noise...
Population = Literal["paediatric", "adult", "mixed", "unknown"]
Conditions = Literal["stethoscope", "smartphone", "manikin", "unknown"]
ProbePurpose = Literal["diagnostic", "demographic", "quality"]


class ProbeDomain(_Strict):
    """The recordings a probe was trained on, hence the only ones its answer means something for."""

    sound_types: list[SoundType] = Field(
        default_factory=list, description="Sound types of its training recordings; empty means unknown."
    )
    population: Population = Field("unknown", description="Whose recordings: paediatric, adult or mixed.")
    dataset: str = Field("unknown", description="Dataset its training side came from.")
    conditions: Conditions = Field("unknown", description="How they were recorded.")
    sites: list[str] = Field(
        default_factory=list, description="Auscultation sites it saw; empty: any/unknown."
    )

    @property
    def known(self) -> bool:
        return bool(self.sound_types)


class Calibration(_Strict):
    """Logits ``z`` become ``z / temperature + shift`` before the softmax or sigmoid, fitted on held-out
    parts of the classifier's training side (``affine``: Platt scaling per output, or bias-corrected
    temperature scaling for a softmax; ``temperature``: no shift).

    The probe's ``.npz`` holds what the service applies: ``temperature``, and the shift folded into its bias.
    These figures document it. ECE: expected calibration error (equal-width bins) of the predicted class's
    probability, on the probe's test side, before and after.
    """

    method: Literal["temperature", "affine"] = "temperature"
    temperature: list[float] = Field(description="One per output (multilabel) or a single value.")
    shift: list[float] = Field(default_factory=list, description="Per output; in the .npz's bias already.")
    fitted_on: int = Field(ge=0, description="Out-of-fold training-side recordings the temperature saw.")
    ece_before: float = Field(ge=0, le=1)
    ece_after: float = Field(ge=0, le=1)
    bins: int = Field(10, ge=2)


class ProbeSpec(_Strict):
    """A linear probe on the pooled window embedding, stored as ``.npz`` (weight, bias, mean, scale)."""

    task: str
    kind: Literal["classification", "multilabel", "regression"]
    file: str
    labels: list[str] = Field(default_factory=list, description="Class names; empty for regression.")
    unit: str | None = Field(None, description="Unit of a regression target, e.g. 'years'.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Held-out metrics, e.g. {'auroc': 0.8}."
    )
    description: str = ""
    purpose: ProbePurpose = Field(
        "diagnostic",
        description="diagnostic and quality probes run on every applicable upload; demographic ones (age, "
        "sex) are benchmark tasks, answered only when asked for by name.",
    )
    domain: ProbeDomain = Field(default_factory=ProbeDomain)
    calibration: Calibration | None = Field(None, description="None: probabilities are not calibrated.")


class SoundTypeSpec(ProbeSpec):
    """The sound-type classifier: a linear probe over the same pooled embedding whose answer (heart, lung,
    cough, breathing or not_auscultation) decides which probes apply to an upload."""

    task: str = "sound-type"
    kind: Literal["classification"] = "classification"
    file: str = "sound_type.npz"
    min_probability: float = Field(
        0.5, ge=0, le=1, description="Below this, the model's sound type is too uncertain to gate on."
    )
    confusion: list[list[int]] = Field(
        default_factory=list, description="Held-out confusion matrix: rows true, columns predicted (labels)."
    )
    confusion_source: str = Field("", description="Which held-out recordings the matrix counts.")


class OutOfDistributionSpec(_Strict):
    """How unlike the training recordings an upload is: mean cosine distance from its embedding to the k
    nearest training-side reference embeddings (after the stored whitening), flagged above ``threshold``."""

    file: str = "ood_reference.npz"
    k: int = Field(5, ge=1)
    threshold: float = Field(description="Scores above this are flagged out of distribution.")
    quantile: float = Field(gt=0, lt=1, description="Quantile of held-out training-side scores = threshold.")
    reference_count: int = Field(ge=1)
    flag_rates: dict[str, float] = Field(
        default_factory=dict, description="Share flagged per held-out set, e.g. test side, generated noise."
    )
    sound_type_thresholds: dict[SoundType, float] = Field(
        default_factory=dict,
        description="Per sound type, the same quantile of held-out training-side recordings of that type, "
        "each scored against the reference rows of its own type only (the file's row_sound_types). The "
        "model's sound type is not used for an upload this unlike the training recordings of that type. "
        "Empty: the bundle predates the check (or a type had too few recordings to set one).",
    )


class ReportIndexSpec(_Strict):
    """Training-side clinical reports and a FAISS index of their joint embeddings."""

    index_file: str = "reports.faiss"
    corpus_file: str = "reports.jsonl"
    count: int = Field(ge=0)
    dim: int = Field(gt=0)
    metric: Literal["inner_product"] = "inner_product"
    kind: Literal["flat", "hnsw", "ivf"] = "flat"
    recall_at_10_vs_exact: float | None = Field(None, description="Measured at export for approximate kinds.")
    deidentified: bool = Field(
        description="True only when every report passed the identifying-information check."
    )
    text_source: Literal["template", "llm", "mixed", "user"] = "template"


class TextSideSpec(_Strict):
    """Optional text encoder (teacher + projection) so the service can embed free text without torch."""

    file: str = "text_encoder.onnx"
    tokenizer_file: str = "tokenizer.json"
    max_tokens: int = 128
    input_ids: str = "input_ids"
    attention_mask: str = "attention_mask"
    output: str = "joint"


class DatasetProvenance(_Strict):
    name: str
    licence: str
    recordings: int = 0


class PretrainedProvenance(_Strict):
    """The pretrained weights the encoder was post-trained from; their licence texts are bundle files."""

    name: str = Field(description="What the weights are, e.g. EfficientAT mn04_as (AudioSet).")
    file: str = Field(description="The weights file's name.")
    sha256: str
    licence: str
    licence_files: list[str] = Field(description="Bundle files holding the licence texts (hashed).")
    source: str = Field("", description="Where the weights come from.")


class Provenance(_Strict):
    datasets: list[DatasetProvenance] = Field(default_factory=list)
    training_config: dict[str, object] = Field(default_factory=dict)
    project_commit: str = "unknown"
    teacher: str | None = None
    pretrained: PretrainedProvenance | None = Field(None, description="None: trained from scratch.")
    created: str = ""


class Manifest(_Strict):
    """``manifest.json``: everything a reader needs to use the bundle, and the hash of every file."""

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    description: str = ""
    audio: AudioContract
    encoder: EncoderSpec
    probes: list[ProbeSpec] = Field(default_factory=list)
    sound_type: SoundTypeSpec | None = Field(None, description="None: only a client-stated type gates.")
    out_of_distribution: OutOfDistributionSpec | None = None
    report_index: ReportIndexSpec | None = None
    text_side: TextSideSpec | None = None
    provenance: Provenance = Field(default_factory=Provenance)
    files: dict[str, str] = Field(default_factory=dict, description="Relative path -> SHA-256 hex digest.")
    manifest_sha256: str | None = Field(
        None, description="SHA-256 of manifest.json with this value zeroed; set by write_manifest."
    )

    @model_validator(mode="after")
    def _every_named_file_is_hashed(self) -> Manifest:
        if not self.files:
            return self  # a manifest being built; write_manifest fills the hashes
        missing = sorted(set(self.named_files()) - set(self.files))
        if missing:
            raise ValueError(f"files named by the manifest but not hashed: {missing}")
        return self

    def named_files(self) -> list[str]:
        """Every file the manifest refers to (the hash table must cover each)."""
        names = [self.encoder.file] + [probe.file for probe in self.probes]
        if self.sound_type is not None:
            names.append(self.sound_type.file)
        if self.out_of_distribution is not None:
            names.append(self.out_of_distribution.file)
        if self.report_index is not None:
            names += [self.report_index.index_file, self.report_index.corpus_file]
        if self.text_side is not None:
            names += [self.text_side.file, self.text_side.tokenizer_file]
        return names

    def probe(self, task: str) -> ProbeSpec:
        for probe in self.probes:
            if probe.task == task:
                return probe
        raise KeyError(task)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle_dir: Path, manifest: Manifest, extra_files: list[str] | None = None) -> Manifest:
    """Hash every named file (plus ``extra_files`` such as MODEL_CARD.md) and write ``manifest.json``."""
    bundle_dir = Path(bundle_dir)
    names = sorted(set(manifest.named_files()) | set(extra_files or []))
    if MANIFEST_NAME in names:
        raise BundleError(
            f"{MANIFEST_NAME} hashes itself; do not list it among the bundle's files", MANIFEST_NAME
        )
    hashes = {}
    for name in names:
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"cannot write manifest: {name} does not exist in {bundle_dir}", file=name)
        hashes[name] = sha256_file(path)
    final = manifest.model_copy(update={"files": hashes, "manifest_sha256": _SELF_HASH_PLACEHOLDER})
    Manifest.model_validate(final.model_dump())  # re-run validators on the completed manifest
    text = json.dumps(final.model_dump(mode="json"), indent=2) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    field = '"manifest_sha256": "{}"'  # JSON escapes quotes inside strings, so this occurs exactly once
    text = text.replace(field.format(_SELF_HASH_PLACEHOLDER), field.format(digest))
    (bundle_dir / MANIFEST_NAME).write_text(text)
    return final.model_copy(update={"manifest_sha256": digest})


def _check_self_hash(raw: bytes) -> None:
    """The manifest's bytes hash to the value it records (with that value zeroed while hashing)."""
    found = list(_SELF_HASH.finditer(raw))
    if len(found) != 1:
        raise BundleError(
            f"{MANIFEST_NAME} has no valid manifest_sha256: it was edited by hand or damaged; "
            "re-export the bundle",
            MANIFEST_NAME,
        )
    start, end = found[0].span(1)
    recorded = raw[start:end].decode()
    actual = hashlib.sha256(raw[:start] + _SELF_HASH_PLACEHOLDER.encode() + raw[end:]).hexdigest()
    if actual != recorded:
        raise BundleError(
            f"{MANIFEST_NAME} does not match its own SHA-256 (recorded {recorded[:12]}..., found "
            f"{actual[:12]}...): it was altered after export; re-export the bundle",
            MANIFEST_NAME,
        )


def read_manifest(bundle_dir: Path) -> Manifest:
    """Parse and validate ``manifest.json`` without checking file hashes."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(
            f"{path} not found: not a model bundle (build one with `acula export`)", MANIFEST_NAME
        )
    data = path.read_bytes()
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{MANIFEST_NAME} is not valid JSON: {exc}", MANIFEST_NAME) from exc
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version not in READABLE_SCHEMA_VERSIONS or isinstance(version, bool):
        raise BundleError(
            f"{MANIFEST_NAME} has schema_version {version!r}; this acula reads versions "
            f"{list(READABLE_SCHEMA_VERSIONS)}: re-export the bundle with this acula "
            "(`acula export --checkpoint CKPT --out DIR`)",
            MANIFEST_NAME,
        )
    _check_self_hash(data)
    if version == 1:
        raw = _upgrade_v1(raw)
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{MANIFEST_NAME} does not match the bundle schema: {exc}", MANIFEST_NAME) from exc


def _upgrade_v1(raw: dict) -> dict:
    """A version-1 manifest read as version 2: probes keep their outputs, but their domains are unknown,
    so the service answers them with a warning that applicability could not be checked."""
    probes = []
    for probe in raw.get("probes") or []:
        if isinstance(probe, dict):
            probe = probe | {"domain": ProbeDomain().model_dump()}
        probes.append(probe)
    return raw | {"schema_version": 1, "probes": probes}


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Check that every hashed file exists and has the recorded SHA-256; raise naming the first that fails."""
    if not manifest.files:
        raise BundleError(f"{MANIFEST_NAME} lists no file hashes", MANIFEST_NAME)
    root = Path(bundle_dir).resolve()
    for name, expected in sorted(manifest.files.items()):
        path = (root / name).resolve()
        if root not in path.parents:
            raise BundleError(f"{name}: path escapes the bundle folder", name)
        if not path.is_file():
            raise BundleError(f"{name} is missing from the bundle {root}", name)
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{name} does not match its SHA-256 in {MANIFEST_NAME} (expected {expected[:12]}..., "
                f"found {actual[:12]}...): the file was altered or truncated",
                name,
            )


def load_manifest(bundle_dir: Path) -> Manifest:
    """Read the manifest and verify every file it names: the only way the service and CLI open a bundle."""
    manifest = read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest)
    return manifest
