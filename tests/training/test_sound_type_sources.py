"""The sound-type classifier's accuracy on a source it never heard: refitted without each source, it must be
scored on that source's recordings, and it must tell a sound type learnt across sources from one that only
a source's fingerprint gave away."""

from __future__ import annotations

import numpy as np

from acula.training.export.sound_type import unseen_source_accuracy


def _rows(rng: np.random.Generator, n: int, kind: int, source: int, kind_axis: bool) -> np.ndarray:
    """Embeddings whose dimension 0 carries the sound type (when ``kind_axis``) and 1..4 the source."""
    x = rng.normal(0.0, 1.0, size=(n, 6))
    if kind_axis:
        x[:, 0] += 6.0 * (1 if kind == 1 else -1)
    x[:, 1 + source] += 4.0
    return x


def _sources(kind_axis_for_second_lung_source: bool) -> tuple[np.ndarray, ...]:
    """Heart (0) from sources 0 and 1, lung (1) from sources 2 and 3; the second lung source carries the
    sound type on the shared axis or only its own fingerprint."""
    rng = np.random.default_rng(0)
    parts = [
        (_rows(rng, 60, 0, 0, True), 0, "heart-a"),
        (_rows(rng, 60, 0, 1, True), 0, "heart-b"),
        (_rows(rng, 60, 1, 2, True), 1, "lung-a"),
        (_rows(rng, 60, 1, 3, kind_axis_for_second_lung_source), 1, "lung-b"),
    ]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([np.full(len(p[0]), p[1]) for p in parts])
    sources = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    return x, y, sources


def test_a_sound_type_shared_across_sources_is_recognised_on_an_unseen_source() -> None:
    x, y, sources = _sources(kind_axis_for_second_lung_source=True)
    accuracy = unseen_source_accuracy(x, y, sources, x, y, sources, c=1.0)
    assert set(accuracy) == {"heart-a", "heart-b", "lung-a", "lung-b"}
    assert min(accuracy.values()) > 0.9, accuracy


def test_a_sound_type_only_the_source_fingerprint_gave_away_fails_on_that_source() -> None:
    x, y, sources = _sources(kind_axis_for_second_lung_source=False)
    accuracy = unseen_source_accuracy(x, y, sources, x, y, sources, c=1.0)
    assert accuracy["lung-b"] < 0.5 < accuracy["heart-a"], accuracy


def test_the_held_out_source_is_never_in_its_own_refit() -> None:
    """Rows of the evaluated source left in the training rows would make every figure near perfect: here a
    source whose labels contradict the others is learnt only if it leaks into its own refit."""
    x, y, sources = _sources(kind_axis_for_second_lung_source=True)
    flipped = np.where(sources == "lung-b", 0, y)  # lung-b's recordings labelled heart everywhere
    accuracy = unseen_source_accuracy(x, flipped, sources, x, flipped, sources, c=1.0)
    assert accuracy["lung-b"] < 0.1, accuracy


def test_sources_whose_sound_types_have_no_other_source_are_left_out() -> None:
    x, y, sources = _sources(kind_axis_for_second_lung_source=True)
    only_here = sources == "lung-b"
    y = np.where(only_here, 2, y)  # a third type (say, cough) recorded by one source only
    accuracy = unseen_source_accuracy(x, y, sources, x, y, sources, c=1.0)
    # lung-b's cough and, now, lung-a's lung each have one source: refitted without it, nothing could name it.
    assert set(accuracy) == {"heart-a", "heart-b"}


def test_generated_clips_train_every_refit_and_are_never_scored_as_a_source() -> None:
    x, y, sources = _sources(kind_axis_for_second_lung_source=True)
    sources = np.where(sources == "heart-b", "generated", sources)
    accuracy = unseen_source_accuracy(x, y, sources, x, y, sources, c=1.0)
    assert "generated" not in accuracy and set(accuracy) == {"heart-a", "lung-a", "lung-b"}


def test_only_the_sound_types_other_sources_also_have_are_scored() -> None:
    x, y, sources = _sources(kind_axis_for_second_lung_source=True)
    cough = (sources == "heart-b") & (np.arange(len(y)) % 2 == 0)
    y = np.where(cough, 2, y)  # half of heart-b's recordings are coughs no other source recorded
    accuracy = unseen_source_accuracy(x, y, sources, x, y, sources, c=1.0)
    assert accuracy["heart-b"] > 0.9, accuracy  # scored on its hearts only, not dragged down by the coughs
