"""What a bundle ships for applicability: probe domains and purposes, calibrated probabilities, the
sound-type classifier and the out-of-distribution reference, from a tiny model and a few real recordings of
every dataset (plus generated non-auscultation clips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from acula.service.bundle import NOT_AUSCULTATION, SOUND_TYPES, Manifest, load_manifest
from acula.training.data.records import Recording
from acula.training.data.sound_types import sound_type
from acula.training.data.synthetic import GENERATORS
from acula.training.export import ExportOptions, export_bundle
from acula.training.export.inputs import probe_tasks
from acula.training.nets.factory import build_model, save_checkpoint
from tests.training.test_export import tiny_config

GENERATED_TRAIN, GENERATED_HELD_OUT = 5, 2


COVERED = ("record_label", "AS", "AR", "MR", "MS", "abnormal", "sex", "quality", "component", "sound_type")


def _cover(subjects: dict[str, list[Recording]], count: int) -> list[str]:
    """``count`` subjects chosen greedily so that every label value of the dataset appears (each probe
    needs every class on its training side), then in id order."""

    def values(subject: str) -> set[tuple[str, str]]:
        return {(k, str(r.labels.get(k))) for r in subjects[subject][:4] for k in COVERED if k in r.labels}

    chosen: list[str] = []
    seen: set[tuple[str, str]] = set()
    remaining = sorted(subjects)
    while remaining and len(chosen) < count:
        best = max(remaining, key=lambda s: len(values(s) - seen))  # ties: the first in id order
        chosen.append(best)
        seen |= values(best)
        remaining.remove(best)
    return chosen


def few_of_every_dataset(records: list[Recording], train: int = 14, test: int = 6) -> list[Recording]:
    """Up to ``train`` training-side and ``test`` test-side subjects per dataset, four recordings each."""
    by_side: dict[tuple[str, bool], dict[str, list[Recording]]] = {}
    for record in records:
        if record.audio_path is not None and record.split != "none":
            side = by_side.setdefault((record.dataset, record.split.startswith("test")), {})
            side.setdefault(record.subject_id, []).append(record)
    chosen = []
    for (_, is_test), subjects in sorted(by_side.items()):
        for subject in _cover(subjects, test if is_test else train):
            chosen += subjects[subject][:4]
    return chosen


@pytest.fixture(scope="module")
def records(shared_data: Path) -> list[Recording]:
    from acula.training.data import load_records

    return few_of_every_dataset(load_records(shared_data))


@pytest.fixture(scope="module")
def bundle(records: list[Recording], tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "final.pt", build_model(tiny_config()))
    out = tmp_path_factory.mktemp("bundles") / "acula-gating"
    options = ExportOptions(
        checkpoint=checkpoint,
        out=out,
        text_side=False,
        cache_dir=tmp_path_factory.mktemp("cache"),
        generated_clips=GENERATED_TRAIN,
        generated_held_out=GENERATED_HELD_OUT,
    )
    export_bundle(options, records, probe_tasks(records), None, None, {})
    return out


@pytest.fixture(scope="module")
def manifest(bundle: Path) -> Manifest:
    return load_manifest(bundle)


@pytest.mark.slow
def test_probes_carry_their_task_domain_purpose_and_calibration(bundle: Path, manifest: Manifest) -> None:
    from acula.training.bench.tasks import TASKS

    assert manifest.probes
    for probe in manifest.probes:
        task = TASKS[probe.task]
        assert probe.domain == task.domain and probe.purpose == task.purpose, probe.task
        with np.load(bundle / probe.file) as arrays:
            if probe.kind == "regression":
                assert probe.calibration is None and "temperature" not in arrays.files
                continue
            if probe.calibration is None:  # a class too rare for every fold: left uncalibrated, and says so
                assert "temperature" not in arrays.files
                continue
            expected = (len(probe.labels),) if probe.kind == "multilabel" else (1,)
            assert arrays["temperature"].shape == expected
            assert np.allclose(arrays["temperature"], probe.calibration.temperature)
            assert 0 <= probe.calibration.ece_after <= 1 and probe.calibration.bins == 10
    assert {p.purpose for p in manifest.probes} == {"diagnostic", "demographic", "quality"}
    calibrated = {p.task for p in manifest.probes if p.calibration is not None}
    assert {"sprsound-adventitious", "sprsound-record4", "bmd-valve"} <= calibrated


@pytest.mark.slow
def test_sound_type_classifier_is_held_out_on_every_dataset(
    bundle: Path, manifest: Manifest, records: list[Recording]
) -> None:
    spec = manifest.sound_type
    assert spec is not None and spec.labels == [*SOUND_TYPES, NOT_AUSCULTATION]
    confusion = np.asarray(spec.confusion)
    assert confusion.shape == (5, 5) and confusion.sum() == spec.metrics["n_test"]
    assert confusion[-1].sum() == GENERATED_HELD_OUT * len(GENERATORS)  # every held-out generated clip
    assert "test side" in spec.confusion_source and "generated" in spec.confusion_source
    with_test_side = {r.dataset for r in records if r.split.startswith("test")} | {"generated"}
    assert {k.split("/", 1)[1] for k in spec.metrics if k.startswith("accuracy/")} == with_test_side
    assert 0.0 <= spec.metrics["accuracy"] <= 1.0 and 0.2 <= spec.min_probability <= 0.95
    # Band-limited copies trained it and are scored held out (every test recording stored above a limit).
    assert {"band_limited_accuracy/4000", "band_limited_accuracy/2000"} <= set(spec.metrics)
    originals = sum(1 for r in records if r.split == "train" and sound_type(r)) + GENERATED_TRAIN * len(
        GENERATORS
    )
    assert spec.metrics["n_train"] > originals
    # Refitted without each source whose sound types some other source also has, scored on that source.
    unseen = {
        k.split("/", 1)[1]: v for k, v in spec.metrics.items() if k.startswith("unseen_source_accuracy/")
    }
    assert {"physionet2016", "bmd_hs", "sprsound"} <= set(unseen) and "generated" not in unseen
    assert "coswara" not in unseen  # its cough and breathing have no other source
    assert all(0.0 <= v <= 1.0 for v in unseen.values())
    assert spec.calibration is not None
    with np.load(bundle / spec.file) as arrays:
        assert set(arrays.files) == {"weight", "bias", "mean", "scale", "temperature"}


@pytest.mark.slow
def test_out_of_distribution_reference_and_flag_rates(bundle: Path, manifest: Manifest) -> None:
    spec = manifest.out_of_distribution
    assert spec is not None and spec.quantile == 0.99 and spec.k == 5
    with np.load(bundle / spec.file) as arrays:
        assert arrays["reference"].shape == (spec.reference_count, arrays["projection"].shape[1])
    datasets = {p.domain.dataset for p in manifest.probes}
    assert {f"test/{d}" for d in datasets} <= set(spec.flag_rates)
    assert {"generated"} | {f"generated/{g}" for g in GENERATORS} <= set(spec.flag_rates)
    assert all(0.0 <= rate <= 1.0 for rate in spec.flag_rates.values())
    # Per sound type: a threshold for each type with enough held-out recordings, the rows' types in the file,
    # and how often the check fires on each test side's recordings of their own type.
    assert set(spec.sound_type_thresholds) <= set(SOUND_TYPES) and "heart" in spec.sound_type_thresholds
    assert all(0.0 < value < 2.0 for value in spec.sound_type_thresholds.values())
    with np.load(bundle / spec.file) as arrays:
        types = arrays["row_sound_types"]
        assert types.shape == (spec.reference_count,) and set(types.tolist()) <= {*SOUND_TYPES, ""}
    own_type = {name.removeprefix("own_type/") for name in spec.flag_rates if name.startswith("own_type/")}
    assert "test/physionet2016" in own_type and own_type <= {
        n for n in spec.flag_rates if n.startswith("test/")
    }


@pytest.mark.slow
def test_the_service_reads_every_part_for_a_recording_of_each_dataset(
    bundle: Path, manifest: Manifest, records: list[Recording]
) -> None:
    from acula.service.core.ood import OodScorer
    from acula.service.core.pipeline import InferencePipeline
    from acula.service.core.probes import LinearProbe

    assert manifest.sound_type is not None and manifest.out_of_distribution is not None
    pipeline = InferencePipeline.from_bundle(bundle, provider="cpu")
    dim = manifest.encoder.embedding.shape[1]
    sound_type = LinearProbe(manifest.sound_type, bundle / manifest.sound_type.file, dim=int(dim))
    ood = OodScorer(bundle, manifest.out_of_distribution, dim=int(dim))
    for dataset in sorted({r.dataset for r in records}):
        record = next(r for r in records if r.dataset == dataset and r.split.startswith("test"))
        assert record.audio_path is not None
        prediction = pipeline.predict(record.audio_path, top_k=0)
        probabilities = sound_type.scores(prediction.embedding[None])[0]
        assert probabilities.sum() == pytest.approx(1.0) and probabilities.shape == (5,)
        assert np.isfinite(ood.score(prediction.embedding).score)
        assert prediction.sound_type is not None and prediction.sound_type.model is not None
        label = prediction.sound_type.model.label
        if label in manifest.out_of_distribution.sound_type_thresholds:
            assert prediction.sound_type_check is not None
            assert np.isfinite(prediction.sound_type_check.score)


@pytest.mark.slow
def test_model_card_shows_domains_calibration_sound_type_and_flag(bundle: Path) -> None:
    card = (bundle / "MODEL_CARD.md").read_text()
    for text in (
        "| purpose | domain |",
        "ECE",
        "## Sound type",
        "true \\ predicted",
        "## Out-of-distribution",
    ):
        assert text in card, text
    assert "test/sprsound" in card and "generated/speech" in card
    assert "Refitted without one source" in card and "own_type/test/" in card
