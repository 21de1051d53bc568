"""The inference pipeline on a real (tiny) bundle: outputs, consistency, and refusal of broken bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from acula.service.bundle import BundleError, Manifest, read_manifest, write_manifest
from acula.service.core.errors import NoTextSide, UnknownTask
from acula.service.core.pipeline import (
    CPU_BATCH_SIZE,
    CUDA_BATCH_SIZE,
    InferencePipeline,
    default_batch_size,
)
from acula.service.core.windowing import window_starts
from tests.support.bundles import CLASS_LABELS, JOINT_DIM, TinyBundleOptions, build_tiny_bundle, wav_bytes


@pytest.fixture(scope="module")
def pipeline(tiny_bundle: Path) -> InferencePipeline:
    return InferencePipeline.from_bundle(tiny_bundle, provider="cpu", max_batch_size=4)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def test_predict_outputs_every_task_with_valid_numbers(pipeline: InferencePipeline) -> None:
    prediction = pipeline.predict(wav_bytes(10.0), top_k=3, per_window=True)
    assert prediction.window_count == len(window_starts(80000, 16000, 8000)) == 9
    sound = prediction.tasks["sound"]
    assert sound.label in CLASS_LABELS
    assert sum(sound.probabilities.values()) == pytest.approx(1.0)
    assert sound.label == max(sound.probabilities, key=sound.probabilities.__getitem__)
    disease = prediction.tasks["disease"]
    assert all(0.0 <= p <= 1.0 for p in disease.probabilities.values())
    assert disease.positive == [k for k, p in disease.probabilities.items() if p >= 0.5]
    assert prediction.tasks["age"].unit == "years" and np.isfinite(prediction.tasks["age"].value)
    assert np.linalg.norm(prediction.joint) == pytest.approx(1.0, abs=1e-5)
    assert prediction.reports is not None and len(prediction.reports) == 3
    scores = [hit.score for hit in prediction.reports]
    assert scores == sorted(scores, reverse=True)
    assert prediction.windows is not None and len(prediction.windows) == 9
    assert prediction.windows[-1].end_s == pytest.approx(10.0)


def test_window_in_a_batch_equals_window_alone(pipeline: InferencePipeline) -> None:
    windows = pipeline.cut(pipeline.decode(wav_bytes(10.0, seed=3)))
    batched, batched_joint = pipeline.backend.run(windows)
    for row in range(len(windows)):
        alone, alone_joint = pipeline.backend.run(windows[row : row + 1])
        np.testing.assert_allclose(batched[row], alone[0], atol=1e-6)
        np.testing.assert_allclose(batched_joint[row], alone_joint[0], atol=1e-6)


def test_chunked_encode_matches_one_batch(pipeline: InferencePipeline) -> None:
    windows = pipeline.cut(pipeline.decode(wav_bytes(10.0, seed=4)))
    chunked, _ = pipeline.encode(windows)  # max_batch_size 4: three calls
    whole, _ = pipeline.backend.run(windows)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_pipeline_reads_a_file_path_like_bytes(pipeline: InferencePipeline, tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes(3.0, seed=5))
    from_path = pipeline.embed(path)
    from_bytes = pipeline.embed(path.read_bytes())
    np.testing.assert_array_equal(from_path.embedding, from_bytes.embedding)


def test_unknown_task_and_missing_text_side_are_refused(pipeline: InferencePipeline) -> None:
    with pytest.raises(UnknownTask):
        pipeline.check_request(["nope"], 0)
    assert pipeline.check_request(["age", "age"], 0).tasks == ("age",)
    with pytest.raises(NoTextSide):
        pipeline.search_text("wheeze", 3)


def test_tampered_file_is_refused_by_name(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    with (bundle / "probe_sound.npz").open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(BundleError) as error:
        InferencePipeline.from_bundle(bundle, provider="cpu")
    assert error.value.file == "probe_sound.npz"


def _rewrite(bundle: Path, **encoder_changes: object) -> None:
    manifest = read_manifest(bundle)
    data = manifest.model_dump()
    data["encoder"].update(encoder_changes)
    data["files"] = {}
    write_manifest(bundle, Manifest.model_validate(data))


@pytest.mark.parametrize(
    "changes",
    [
        {"embedding": {"name": "features", "shape": ["batch", 16]}},
        {"joint": {"name": "joint", "shape": ["batch", 32]}},
        {"input": {"name": "audio", "shape": ["batch", "samples"]}},
    ],
    ids=["output-name", "joint-dim", "input-name"],
)
def test_encoder_not_matching_manifest_is_refused(
    tiny_bundle: Path, tmp_path: Path, changes: dict[str, object]
) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    _rewrite(bundle, **changes)
    with pytest.raises(BundleError) as error:
        InferencePipeline.from_bundle(bundle, provider="cpu")
    assert error.value.file == "encoder.onnx"


def test_probe_of_wrong_dimension_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    np.savez(bundle / "probe_age.npz", weight=np.ones((1, 5)), bias=np.zeros(1))
    manifest = read_manifest(bundle)
    write_manifest(bundle, manifest.model_copy(update={"files": {}}))
    with pytest.raises(BundleError) as error:
        InferencePipeline.from_bundle(bundle, provider="cpu")
    assert error.value.file == "probe_age.npz"


def test_corpus_not_matching_index_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    lines = (bundle / "reports.jsonl").read_text().splitlines()[:-1]
    (bundle / "reports.jsonl").write_text("\n".join(lines) + "\n")
    write_manifest(bundle, read_manifest(bundle).model_copy(update={"files": {}}))
    with pytest.raises(BundleError) as error:
        InferencePipeline.from_bundle(bundle, provider="cpu")
    assert error.value.file == "reports.faiss"


def test_texts_withheld_unless_corpus_is_deidentified(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    manifest = read_manifest(bundle)
    assert manifest.report_index is not None
    index = manifest.report_index.model_copy(update={"deidentified": False})
    write_manifest(bundle, manifest.model_copy(update={"report_index": index, "files": {}}))
    hits = InferencePipeline.from_bundle(bundle, provider="cpu").predict(wav_bytes(3.0), top_k=5).reports
    assert hits is not None and len(hits) == 5
    assert all(hit.text is None and hit.id.startswith("tiny-") for hit in hits)
    assert json.loads((bundle / "manifest.json").read_text())["report_index"]["dim"] == JOINT_DIM


def test_cuda_request_without_cuda_falls_back_loudly(
    tiny_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here: no fallback to observe")
    with caplog.at_level("WARNING", logger="acula.backend"):
        pipeline = InferencePipeline.from_bundle(tiny_bundle, provider="cuda")
    assert pipeline.backend.providers == ["CPUExecutionProvider"]
    assert any("NOT active" in record.getMessage() for record in caplog.records)


def test_free_text_search_with_a_text_side(tmp_path: Path) -> None:
    build_tiny_bundle(tmp_path / "text", TinyBundleOptions(text_side=True))
    pipeline = InferencePipeline.from_bundle(tmp_path / "text", provider="cpu")
    assert pipeline.text_encoder is not None
    hits = pipeline.search_text("wheeze heard at the left lower lobe", 5)
    assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert [h.id for h in pipeline.search_text("wheeze heard at the left lower lobe", 5)] == [
        h.id for h in hits
    ]
    assert [h.id for h in pipeline.search_text("normal", 5)] != [h.id for h in hits]
    vector = pipeline.text_encoder.embed("crackles")
    assert vector.shape == (JOINT_DIM,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_probes_fold_standardisation_without_changing_scores(pipeline: InferencePipeline) -> None:
    """The folded weights give the scores of the probe as exported: standardise, then the linear map."""
    rng = np.random.default_rng(3)
    for probe in pipeline.probes.values():
        embeddings = rng.normal(size=(5, probe.weight.shape[1])) * 3.0
        z = ((embeddings - probe.mean) / probe.scale) @ probe.weight.T + probe.bias
        if probe.spec.kind == "regression":
            expected = z * probe.target_scale + probe.target_mean
        elif probe.spec.kind == "multilabel" or z.shape[1] == 1:
            p = 1.0 / (1.0 + np.exp(-z))
            expected = p if probe.spec.kind == "multilabel" else np.hstack([1.0 - p, p])
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            expected = e / e.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(probe.scores(embeddings), expected, rtol=1e-10, atol=1e-12)


def test_batch_size_defaults_to_the_provider_in_use(tiny_bundle: Path) -> None:
    assert default_batch_size(["CUDAExecutionProvider", "CPUExecutionProvider"]) == CUDA_BATCH_SIZE
    assert default_batch_size(["CPUExecutionProvider"]) == CPU_BATCH_SIZE
    assert InferencePipeline.from_bundle(tiny_bundle, provider="cpu").max_batch_size == CPU_BATCH_SIZE
