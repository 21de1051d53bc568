"""Export: ONNX parity on real recordings, a full bundle from a tiny model that loads and predicts through the
service's pipeline, refusal of identifying reports, and the loader's refusal of a mismatched encoder.

The tiny model is the real ``AculaAudioModel`` at a small size (untrained), the recordings are real SPRSound
training files, and the probe targets are real metadata read from their file names (sex, age), split by
patient, so every stage runs on the data it will meet in production.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from acula.service.bundle import (
    AudioContract,
    BundleError,
    Manifest,
    TensorSpec,
    load_manifest,
    write_manifest,
)
from acula.training.data import load_records
from acula.training.data.records import Recording
from acula.training.export import ExportOptions, ProbeTask, export_bundle
from acula.training.export.index import CorpusRefused, build_index
from acula.training.export.onnx import (
    ExportError,
    check_parity,
    export_encoder,
    parity_cases,
    parity_recordings,
)
from acula.training.nets.cnn import CNNConfig
from acula.training.nets.factory import build_model, save_checkpoint
from acula.training.nets.frontend import FrontendConfig
from acula.training.nets.model import ModelConfig

torch.set_num_threads(2)
RATE = 8000


class _FileNameMeta(BaseModel):
    age: float
    sex: str


def tiny_config(text_dim: int | None = 384) -> ModelConfig:
    return ModelConfig(
        frontend=FrontendConfig(sample_rate=RATE, n_fft=256, hop_length=80, n_mels=32),
        cnn=CNNConfig(channels=[8, 16, 16], freq_pool=[True, True, False]),
        embedding_dim=24,
        joint_dim=16,
        decoder_hidden=16,
        text_dim=text_dim,
        audio=AudioContract(window_seconds=2.0),
    )


def sprsound_records(shared_data: Path, patients: int = 16) -> list[Recording]:
    """Real SPRSound training files; age and sex from the file name; every third patient held out."""
    folder = shared_data / "sprsound" / "train_wav"
    by_patient: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.*")):
        by_patient.setdefault(path.name.split("_")[0], []).append(path)
    records = []
    for i, (patient, paths) in enumerate(sorted(by_patient.items())[:patients]):
        for path in paths[:2]:
            _, age, sex, *_ = path.stem.split("_")
            meta = _FileNameMeta(age=float(age), sex="male" if sex == "0" else "female")
            records.append(
                Recording(
                    dataset="sprsound",
                    recording_id=path.stem,
                    subject_id=patient,
                    audio_path=path,
                    native_rate=RATE,
                    duration_s=None,
                    split="test" if i % 3 == 2 else "train",
                    metadata=meta,
                    labels={"sex": meta.sex, "age_years": meta.age},
                )
            )
    return records


def tasks_for(records: list[Recording]) -> list[ProbeTask]:
    train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split != "train"]
    return [
        ProbeTask(
            "sex",
            "binary",
            [(r, r.labels["sex"]) for r in train],
            [(r, r.labels["sex"]) for r in test],
            labels=["male", "female"],  # the task's order, not alphabetical
        ),
        ProbeTask(
            "age",
            "regression",
            [(r, r.labels["age_years"]) for r in train],
            [(r, r.labels["age_years"]) for r in test],
            unit="years",
        ),
    ]


def reports_for(records: list[Recording]) -> list[dict]:
    return [
        {
            "report_id": f"r-{r.recording_id}",
            "recording_id": r.recording_id,
            "dataset": r.dataset,
            "split": r.split,
            "text": (
                f"Paediatric lung sound recording from a {r.labels['sex']} child "
                f"aged {r.labels['age_years']:g} years."
            ),
            "facts": {"age_years": r.labels["age_years"]},
            "labels": {"sex": r.labels["sex"]},
            "writer": "template",
        }
        for r in records  # both sides: export must keep only the training side
    ]


def no_identifiers(text: str) -> list[str]:
    return []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(tiny_config())
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "final.pt", model)


@pytest.fixture(scope="module")
def bundle(shared_data: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = sprsound_records(shared_data)
    out = tmp_path_factory.mktemp("bundles") / "acula-test"
    options = ExportOptions(
        checkpoint=checkpoint,
        out=out,
        root=shared_data,
        text_side=False,
        cache_dir=tmp_path_factory.mktemp("cache"),
    )
    result = export_bundle(
        options, records, tasks_for(records), reports_for(records), no_identifiers, {"sprsound": "GPL-3.0"}
    )
    assert result.parity_max_abs_diff <= 1e-4
    return out


def _real_samples(shared_data: Path, count: int = 3) -> list[np.ndarray]:
    import soundfile as sf

    paths = sorted((shared_data / "sprsound" / "train_wav").glob("*.*"))[:count]
    return [sf.read(str(p), dtype="float32")[0] for p in paths]


@pytest.mark.slow
def test_parity_holds_for_the_export_and_fails_for_a_different_model(
    shared_data: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(text_dim=None)).eval()
    path = export_encoder(
        model, tmp_path / "encoder.onnx", 2 * RATE, min_samples=RATE // 2, max_samples=60 * RATE
    )
    cases = parity_cases(_real_samples(shared_data), 2 * RATE, RATE // 2)
    result = check_parity(model, path, cases)
    assert result.max_abs_diff <= 1e-4
    assert {shape[0] for shape in result.cases} >= {1, 3}  # several batch sizes
    assert len({shape[1] for shape in result.cases}) >= 3  # several lengths
    with torch.no_grad():
        model.audio_head.linear.bias.add_(0.5)  # the graph on disk no longer matches the module
    with pytest.raises(ExportError, match="does not match torch"):
        check_parity(model, path, cases)


@pytest.mark.slow
def test_exported_bundle_loads_and_predicts(bundle: Path, shared_data: Path) -> None:
    from acula.service.core.pipeline import InferencePipeline

    manifest = load_manifest(bundle)
    assert manifest.audio.sample_rate == RATE and manifest.audio.window_seconds == 2.0
    assert [p.task for p in manifest.probes] == ["sex", "age"]
    assert manifest.probe("sex").labels == ["male", "female"]
    assert {"auroc", "balanced_accuracy"} <= set(manifest.probe("sex").metrics)
    assert manifest.probe("age").unit == "years" and "mae" in manifest.probe("age").metrics
    assert manifest.probe("sex").calibration is not None and manifest.probe("age").calibration is None
    assert manifest.sound_type is None  # SPRSound alone has no heart, cough or breathing sound to learn
    assert manifest.out_of_distribution is not None and manifest.out_of_distribution.flag_rates
    assert manifest.report_index is not None and manifest.report_index.deidentified
    corpus = [json.loads(line) for line in (bundle / "reports.jsonl").read_text().splitlines()]
    train_ids = {r.recording_id for r in sprsound_records(shared_data) if r.split == "train"}
    assert manifest.report_index.count == len(corpus) == len(train_ids)
    assert {row["recording_id"] for row in corpus} == train_ids  # no test-side report is shipped
    assert manifest.provenance.datasets[0].licence == "GPL-3.0"
    assert (bundle / "MODEL_CARD.md").read_text().count("not a diagnostic device") >= 1
    assert not list(bundle.parent.glob("*.partial"))

    pipeline = InferencePipeline.from_bundle(bundle, provider="cpu")
    file = sorted((shared_data / "sprsound" / "train_wav").glob("*.*"))[0]
    prediction = pipeline.predict(file, top_k=3)
    assert set(prediction.tasks) == {"sex", "age"}
    assert sum(prediction.tasks["sex"].probabilities.values()) == pytest.approx(1.0)
    assert np.isfinite(prediction.tasks["age"].value)
    assert len(prediction.reports) == 3 and prediction.reports[0].text.startswith("Paediatric")
    assert np.linalg.norm(prediction.joint) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_loader_rejects_a_manifest_that_does_not_match_the_onnx_outputs(bundle: Path, tmp_path: Path) -> None:
    from acula.service.core.pipeline import InferencePipeline

    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    manifest = Manifest.model_validate(json.loads((broken / "manifest.json").read_text()))
    wrong = manifest.encoder.model_copy(update={"joint": TensorSpec(name="joint", shape=["batch", 99])})
    write_manifest(broken, manifest.model_copy(update={"encoder": wrong}), extra_files=list(manifest.files))
    load_manifest(broken)  # hashes are valid: only the graph check can catch this
    with pytest.raises(BundleError, match="joint"):
        InferencePipeline.from_bundle(broken, provider="cpu")

    renamed = manifest.encoder.model_copy(
        update={"embedding": TensorSpec(name="features", shape=["batch", 24])}
    )
    write_manifest(broken, manifest.model_copy(update={"encoder": renamed}), extra_files=list(manifest.files))
    with pytest.raises(BundleError, match="features"):
        InferencePipeline.from_bundle(broken, provider="cpu")


@pytest.mark.slow
def test_export_refuses_identifying_reports(shared_data: Path, checkpoint: Path, tmp_path: Path) -> None:
    records = sprsound_records(shared_data, patients=6)
    reports = reports_for(records)
    reports[0]["text"] += " Patient name: Jane Doe."

    def check(text: str) -> list[str]:
        return ["contains a name"] if "name:" in text else []

    options = ExportOptions(
        checkpoint=checkpoint, out=tmp_path / "refused", text_side=False, cache_dir=tmp_path
    )
    with pytest.raises(CorpusRefused, match="1 report"):
        export_bundle(options, records, tasks_for(records), reports, check, {})
    assert not (tmp_path / "refused").exists()


def test_approximate_indexes_report_their_recall() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    _, exact = build_index(vectors, "flat")
    assert exact is None
    for kind in ("hnsw", "ivf"):
        index, recall = build_index(vectors, kind)
        assert index.ntotal == 2000
        assert 0.5 < recall <= 1.0


@pytest.mark.slow
def test_text_side_searches_the_report_index_without_torch(
    shared_data: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """The int8 text encoder + tokenizer embed a report's own text next to that report in the index."""
    from acula.service.core.pipeline import InferencePipeline

    records = sprsound_records(shared_data, patients=6)
    reports = reports_for(records)
    options = ExportOptions(checkpoint=checkpoint, out=tmp_path / "text", cache_dir=tmp_path)
    result = export_bundle(options, records, tasks_for(records), reports, no_identifiers, {})
    manifest = load_manifest(result.out)
    assert manifest.text_side is not None and manifest.text_side.max_tokens == 256
    assert result.notes["text_side_min_cosine_vs_torch"] >= 0.98
    assert (result.out / "text_encoder.onnx").stat().st_size < 30e6  # int8: fits the bundle budget
    pipeline = InferencePipeline.from_bundle(result.out, provider="cpu")
    distinct = {r["text"]: r["report_id"] for r in reports if r["split"] == "train"}
    text, report_id = next(iter(distinct.items()))
    hits = pipeline.search_text(text, k=len(reports))
    assert hits[0].text == text
    assert hits[0].score == pytest.approx(1.0, abs=0.02)
    assert report_id in {hit.id for hit in hits if hit.text == text}


def test_parity_recordings_cover_every_native_rate(shared_data: Path) -> None:
    """One recording per stored sample rate comes first (2, 4, 8 and 16 kHz in ../shared/data)."""
    records = [r for r in load_records(shared_data, None) if r.is_training_side]
    chosen, samples = parity_recordings(records, lambda r: np.zeros(4, np.float32), count=6)
    rates = {r.native_rate for r in records}
    assert {r.native_rate for r in chosen[: len(rates)]} == rates
    assert len(chosen) == len(samples) == min(6, len(records))
    assert all(r.is_training_side for r in chosen)


def test_the_bundle_being_rebuilt_does_not_make_the_commit_dirty(tmp_path: Path) -> None:
    """Re-exporting a committed bundle in place changes its files; only other changes mark '+dirty'."""
    import subprocess

    from acula.training.export.provenance import git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "manifest.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "bundle" / "manifest.json").write_text('{"v": 2}')
    clean = git_commit(tmp_path, ignore=tmp_path / "bundle")
    assert len(clean) == 40, clean
    assert git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path, ignore=tmp_path / "bundle").endswith("+dirty")
