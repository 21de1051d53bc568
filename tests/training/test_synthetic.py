"""Generated non-auscultation clips, sound types from metadata, and the out-of-distribution reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from acula.service.bundle import OutOfDistributionSpec
from acula.training.data import synthetic
from acula.training.data.records import Recording
from acula.training.data.sound_types import sound_type
from acula.training.export.ood import fit_reference, flag_rates


def test_every_generator_is_deterministic_and_audible(tmp_path: Path) -> None:
    for name in synthetic.GENERATORS:
        samples, rate = synthetic.generate(name, 7)
        again, rate_again = synthetic.generate(name, 7)
        assert rate == rate_again and np.array_equal(samples, again), name
        assert rate in synthetic.RATES and 1.5 <= len(samples) / rate <= 12.0, name
        assert np.all(np.isfinite(samples)) and np.abs(samples).max() < 1.0, name
        assert np.abs(samples).max() > 1e-4, name  # near-silence is quiet, never digital silence
    assert not np.array_equal(synthetic.generate("music", 1)[0], synthetic.generate("music", 2)[0])


def test_training_and_held_out_clips_never_share_a_seed_and_decode(tmp_path: Path) -> None:
    from acula.service.audio import decode_audio

    train = synthetic.generated_records(tmp_path, 2, held_out=False)
    held = synthetic.generated_records(tmp_path, 2, held_out=True)
    assert len(train) == len(held) == 2 * len(synthetic.GENERATORS)
    assert {r.split for r in train} == {"train"} and {r.split for r in held} == {"test"}
    assert not {r.subject_id for r in train} & {r.subject_id for r in held}
    for record in train[:: len(train) // 4]:
        assert record.audio_path is not None and decode_audio(record.audio_path, 16000).samples.size > 0
    assert synthetic.generated_records(tmp_path, 2, held_out=False) == train  # written once, read again


def test_missing_espeak_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic.shutil, "which", lambda _: None)
    with pytest.raises(RuntimeError, match="Debian package espeak-ng"):
        synthetic.generate("speech", 0)


class _Meta(BaseModel):
    pass


def _record(dataset: str, **labels: object) -> Recording:
    return Recording(
        dataset=dataset,
        recording_id="r",
        subject_id="s",
        audio_path=Path("/x.wav"),
        native_rate=4000,
        duration_s=1.0,
        split="train",
        metadata=_Meta(),
        labels=labels,  # type: ignore[arg-type]
    )


def test_sound_types_come_from_the_dataset_and_its_metadata() -> None:
    assert sound_type(_record("physionet2016")) == sound_type(_record("bmd_hs")) == "heart"
    assert sound_type(_record("sprsound")) == sound_type(_record("icbhi2017")) == "lung"
    assert sound_type(_record("hls_cmds", component="heart")) == "heart"
    assert sound_type(_record("hls_cmds", component="lung")) == "lung"
    assert sound_type(_record("hls_cmds", component="mixed")) is None
    assert sound_type(_record("coswara", sound_type="cough-heavy")) == "cough"
    assert sound_type(_record("coswara", sound_type="breathing-shallow")) == "breathing"
    assert sound_type(_record("generated", generator="speech")) is None


def test_ood_threshold_is_the_held_out_quantile_and_flags_what_lies_elsewhere(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    kinds = rng.normal(scale=3.0, size=(40, 32))  # many kinds of training recording, as real data has
    unseen = rng.normal(scale=3.0, size=(20, 32))  # kinds the training side never had

    def recordings(centres: np.ndarray, n: int) -> np.ndarray:
        return centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, 32))

    groups = np.repeat(np.arange(600), 2)  # two recordings per subject
    spec = fit_reference(recordings(kinds, 1200), groups, tmp_path, quantile=0.95)
    assert isinstance(spec, OutOfDistributionSpec) and spec.k == 5 and spec.quantile == 0.95
    with np.load(tmp_path / spec.file) as data:
        assert data["projection"].shape == (32, 32) and data["reference"].shape == (spec.reference_count, 32)
        assert np.allclose(np.linalg.norm(data["reference"], axis=1), 1.0, atol=1e-5)
    fresh, elsewhere = recordings(kinds, 2000), recordings(unseen, 200)
    rates = flag_rates(tmp_path, spec, {"fresh": fresh, "elsewhere": elsewhere})
    assert rates["fresh"] == pytest.approx(0.05, abs=0.03)  # the quantile holds on unseen subjects
    assert rates["elsewhere"] > 0.9


def test_each_sound_type_gets_its_own_threshold_from_its_held_out_recordings(tmp_path: Path) -> None:
    """Rows typed heart and lung from separate clusters: each type's threshold is the quantile of its own
    held-out recordings against its own rows, a lung recording is far from the heart rows (though near the
    reference as a whole), and a type with too few recordings gets no threshold."""
    from acula.service.core.ood import OodScorer

    rng = np.random.default_rng(1)
    heart_kinds, lung_kinds = rng.normal(scale=3.0, size=(20, 32)), rng.normal(scale=3.0, size=(20, 32))

    def recordings(centres: np.ndarray, n: int) -> np.ndarray:
        return centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, 32))

    x = np.concatenate(
        [recordings(heart_kinds, 2000), recordings(lung_kinds, 2000), recordings(lung_kinds, 6)]
    )
    types = np.asarray(["heart"] * 2000 + ["lung"] * 2000 + ["cough"] * 6)
    spec = fit_reference(x, np.arange(len(x)) // 2, tmp_path, quantile=0.95, sound_types=types)
    assert set(spec.sound_type_thresholds) == {"heart", "lung"}  # 6 coughs: too few for a threshold
    with np.load(tmp_path / spec.file) as data:
        assert data["row_sound_types"].shape == (spec.reference_count,)
    scorer = OodScorer(tmp_path, spec, dim=32)
    fresh_heart, fresh_lung = recordings(heart_kinds, 1000), recordings(lung_kinds, 1000)
    as_heart = [scorer.score_as(row, "heart") for row in fresh_heart]
    assert np.mean([r.flagged for r in as_heart if r]) == pytest.approx(0.05, abs=0.03)
    lung_as_heart = [scorer.score_as(row, "heart") for row in fresh_lung]
    assert np.mean([r.flagged for r in lung_as_heart if r]) > 0.9
    assert np.mean([scorer.score(row).flagged for row in fresh_lung]) < 0.1  # the global check misses them
    assert scorer.score_as(fresh_lung[0], "cough") is None and scorer.score_as(fresh_lung[0], "x") is None
