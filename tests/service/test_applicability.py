"""Every rule of the sound-type gate, on the pure functions (no bundle, no audio)."""

from __future__ import annotations

import pytest

from acula.service.bundle import ProbeDomain, ProbeSpec
from acula.service.core.applicability import (
    ClientContext,
    ProbeRequest,
    SoundTypeDecision,
    decide_sound_type,
    quality_notices,
    select_probes,
)
from acula.service.core.errors import InvalidQuery
from acula.service.core.probes import TaskOutput

LABELS = ["heart", "lung", "cough", "breathing", "not_auscultation"]


def _probe(task: str, sound_types: list[str], population: str = "mixed", purpose: str = "diagnostic", **kw):
    domain = ProbeDomain(sound_types=sound_types, population=population, **kw)  # type: ignore[arg-type]
    return ProbeSpec(
        task=task,
        kind="classification",
        file=f"{task}.npz",
        labels=["a", "b"],
        purpose=purpose,  # type: ignore[arg-type]
        domain=domain,
    )


PROBES = [
    _probe("murmur", ["heart"]),
    _probe("valve", ["heart"], "adult"),
    _probe("wheeze", ["lung"], "paediatric", sites=["posterior left"]),
    _probe("covid", ["cough", "breathing"], "adult"),
    _probe("age", ["lung"], "paediatric", purpose="demographic"),
    _probe("lung-quality", ["lung"], "paediatric", purpose="quality"),
]


def _model(top: str, p: float) -> TaskOutput:
    rest = (1.0 - p) / (len(LABELS) - 1)
    probabilities = {label: (p if label == top else rest) for label in LABELS}
    return TaskOutput("sound-type", "classification", probabilities, label=top, calibrated=True)


def _decided(value: str) -> SoundTypeDecision:
    return decide_sound_type(None, _model(value, 0.9), 0.5)


def _select(decision: SoundTypeDecision, tasks: tuple[str, ...] = (), **context: str):
    selection = select_probes(PROBES, decision, ProbeRequest(tasks, ClientContext.parse(**context)))
    skipped = {skip.task: skip.reason for skip in selection.skipped}
    # Every probe is answered or skipped, never both, never neither.
    assert set(selection.run).isdisjoint(skipped)
    assert set(selection.run) | set(skipped) == {p.task for p in PROBES}
    assert selection.run == [p.task for p in PROBES if p.task in selection.run]  # manifest order
    return selection, skipped


# --- the sound type ----------------------------------------------------------------------------------------
def test_the_models_confident_sound_type_is_used() -> None:
    decision = _decided("heart")
    assert (decision.value, decision.source, decision.probability, decision.reason) == (
        "heart",
        "model",
        0.9,
        None,
    )
    assert decision.notices == ()


def test_a_stated_sound_type_wins_and_the_model_is_still_reported() -> None:
    decision = decide_sound_type("lung", _model("heart", 0.9), 0.5)
    assert (decision.value, decision.source) == ("lung", "client")
    assert decision.probability == pytest.approx(0.025)  # the model's probability of the stated type
    assert decision.model is not None and decision.model.label == "heart"
    assert [n.code for n in decision.notices] == ["sound_type_disagrees"]
    assert "'heart'" in decision.notices[0].message and "0.90" in decision.notices[0].message


def test_no_disagreement_warning_when_the_model_is_unsure_or_agrees() -> None:
    assert decide_sound_type("lung", _model("heart", 0.4), 0.5).notices == ()
    assert decide_sound_type("lung", _model("lung", 0.9), 0.5).notices == ()
    stated_without_model = decide_sound_type("cough", None, 0.5)
    assert (stated_without_model.value, stated_without_model.probability) == ("cough", None)


def test_confident_not_auscultation_is_a_refusal_but_not_against_a_stated_type() -> None:
    refused = decide_sound_type(None, _model("not_auscultation", 0.97), 0.5)
    assert (refused.value, refused.reason, refused.probability) == (None, "not_auscultation", 0.97)
    stated = decide_sound_type("heart", _model("not_auscultation", 0.97), 0.5)
    assert stated.value == "heart" and [n.code for n in stated.notices] == ["sound_type_disagrees"]


def test_an_uncertain_model_decides_nothing_and_says_how_to_get_answers() -> None:
    for top in ("lung", "not_auscultation"):  # an unsure not_auscultation is no refusal either
        decision = decide_sound_type(None, _model(top, 0.45), 0.5)
        assert (decision.value, decision.source, decision.reason) == (None, "model", "sound_type_uncertain")
        assert [n.code for n in decision.notices] == ["sound_type_uncertain"]
        assert "state sound_type" in decision.notices[0].message


def test_out_of_distribution_uploads_are_not_gated_on_the_models_guess() -> None:
    """An upload unlike the training recordings runs no probe on the model's sound type (however confident
    the classifier is), still gets the refusal when it is confidently no auscultation, and a stated sound
    type still wins."""
    for top in ("heart", "lung", "cough", "breathing"):
        decision = decide_sound_type(None, _model(top, 0.99), 0.5, out_of_distribution=True)
        assert (decision.value, decision.source, decision.reason) == (None, "model", "sound_type_uncertain")
        assert decision.model is not None and decision.model.label == top
        [notice] = decision.notices
        assert notice.code == "sound_type_uncertain" and "unlike" in notice.message
        assert "state sound_type" in notice.message
        selection = select_probes(PROBES, decision, ProbeRequest())
        assert selection.run == []
    refused = decide_sound_type(None, _model("not_auscultation", 0.97), 0.5, out_of_distribution=True)
    assert refused.reason == "not_auscultation"
    stated = decide_sound_type("lung", _model("heart", 0.99), 0.5, out_of_distribution=True)
    assert (stated.value, stated.source) == ("lung", "client")


def test_uploads_unlike_the_training_recordings_of_the_models_type_are_not_gated_on_it() -> None:
    """Near the training recordings as a whole but far from those of the type the classifier names: the same
    answer as out of distribution (no probe on the guess; the refusal and a statement still hold), and the
    notice names the type."""
    for top in ("heart", "lung", "cough", "breathing"):
        decision = decide_sound_type(None, _model(top, 0.99), 0.5, unlike_its_type=True)
        assert (decision.value, decision.source, decision.reason) == (None, "model", "sound_type_uncertain")
        [notice] = decision.notices
        assert f"training {top} recordings" in notice.message and "state sound_type" in notice.message
        assert select_probes(PROBES, decision, ProbeRequest()).run == []
    assert decide_sound_type(None, _model("heart", 0.99), 0.5).value == "heart"  # the check is what changed
    refused = decide_sound_type(None, _model("not_auscultation", 0.97), 0.5, unlike_its_type=True)
    assert refused.reason == "not_auscultation"
    stated = decide_sound_type("lung", _model("heart", 0.99), 0.5, unlike_its_type=True)
    assert (stated.value, stated.source) == ("lung", "client")
    unsure = decide_sound_type(None, _model("lung", 0.3), 0.5, unlike_its_type=True)
    assert unsure.reason == "sound_type_uncertain" and "cannot tell" in unsure.notices[0].message


def test_without_a_classifier_or_a_statement_the_source_is_none() -> None:
    decision = decide_sound_type(None, None, 0.5)
    assert (decision.value, decision.source, decision.reason) == (None, "none", "sound_type_unknown")
    assert [n.code for n in decision.notices] == ["sound_type_unknown"]


# --- which probes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sound_type", "runs"),
    [
        ("heart", ["murmur", "valve"]),
        ("lung", ["wheeze", "lung-quality"]),
        ("cough", ["covid"]),
        ("breathing", ["covid"]),
    ],
)
def test_only_probes_of_the_sound_type_run_demographic_ones_never_by_default(
    sound_type: str, runs: list[str]
) -> None:
    selection, skipped = _select(_decided(sound_type))
    assert selection.run == runs
    assert skipped["age"] == "demographic_not_requested"
    assert all(reason == "sound_type_mismatch" for task, reason in skipped.items() if task != "age")
    assert selection.notices == []


def test_a_stated_age_group_skips_probes_of_the_other_population() -> None:
    selection, skipped = _select(_decided("heart"), age_group="paediatric")
    assert selection.run == ["murmur"] and skipped["valve"] == "population_mismatch"  # mixed matches both
    selection, skipped = _select(_decided("lung"), age_group="adult")
    assert selection.run == [] and skipped["wheeze"] == skipped["lung-quality"] == "population_mismatch"
    assert _select(_decided("heart"), age_group="adult")[0].run == ["murmur", "valve"]


def test_a_named_probe_always_runs_with_a_warning_when_it_does_not_apply() -> None:
    selection, skipped = _select(_decided("heart"), ("wheeze", "murmur", "age"), age_group="adult")
    assert selection.run == ["murmur", "wheeze", "age"]
    assert skipped == {"valve": "not_requested", "covid": "not_requested", "lung-quality": "not_requested"}
    warnings = {(n.task, n.code, n.reason) for n in selection.notices}
    assert warnings == {
        ("wheeze", "not_applicable", "sound_type_mismatch"),
        ("age", "not_applicable", "sound_type_mismatch"),
    }
    selection, _ = _select(_decided("lung"), ("wheeze",), age_group="adult")
    assert [(n.code, n.reason) for n in selection.notices] == [("not_applicable", "population_mismatch")]


def test_a_named_demographic_probe_that_applies_runs_without_warning() -> None:
    selection, _ = _select(_decided("lung"), ("age",))
    assert selection.run == ["age"] and selection.notices == []


def test_an_uncertain_sound_type_runs_nothing_unless_named() -> None:
    uncertain = decide_sound_type(None, _model("lung", 0.3), 0.5)
    selection, skipped = _select(uncertain)
    assert selection.run == []
    assert set(skipped.values()) == {"sound_type_uncertain", "demographic_not_requested"}
    assert [n.code for n in selection.notices] == ["sound_type_uncertain"]
    selection, _ = _select(uncertain, ("murmur",))
    assert selection.run == ["murmur"]
    assert [(n.code, n.reason) for n in selection.notices] == [
        ("sound_type_uncertain", None),
        ("not_applicable", "sound_type_uncertain"),
    ]


def test_no_sound_type_at_all_skips_known_domains_and_runs_unknown_ones_with_a_warning() -> None:
    unknown = _probe("legacy", [])
    decision = decide_sound_type(None, None, 0.5)
    selection = select_probes([*PROBES, unknown], decision, ProbeRequest())
    assert selection.run == ["legacy"]
    assert {s.reason for s in selection.skipped} == {"sound_type_unknown", "demographic_not_requested"}
    assert [(n.code, n.task) for n in selection.notices] == [
        ("sound_type_unknown", None),
        ("domain_unknown", "legacy"),
    ]
    # With a sound type, an unknown domain still runs unchecked, with the same warning.
    selection = select_probes([unknown], _decided("heart"), ProbeRequest())
    assert selection.run == ["legacy"] and [n.code for n in selection.notices] == ["domain_unknown"]


def test_a_site_the_probe_never_saw_is_a_warning_not_a_skip() -> None:
    selection, _ = _select(_decided("lung"), site="Anterior Right")
    assert selection.run == ["wheeze", "lung-quality"]
    assert [(n.code, n.task) for n in selection.notices] == [("site_not_seen", "wheeze")]
    assert _select(_decided("lung"), site="POSTERIOR LEFT")[0].notices == []
    assert _select(_decided("heart"), site="Aor")[0].notices == []  # no sites recorded: nothing to say


def test_poor_quality_warns_only_when_a_quality_probe_says_so() -> None:
    def output(task: str, label: str, purpose: str) -> TaskOutput:
        p = (
            {"usable": 0.3, "poor quality": 0.7}
            if label == "poor quality"
            else {"usable": 0.8, "poor quality": 0.2}
        )
        return TaskOutput(task, "classification", p, label=label, purpose=purpose)

    notices = quality_notices(
        {
            "lung-quality": output("lung-quality", "poor quality", "quality"),
            "heart-quality": output("heart-quality", "usable", "quality"),
            "other": output("other", "poor quality", "diagnostic"),
        }
    )
    assert [(n.code, n.task) for n in notices] == [("poor_quality", "lung-quality")]
    assert "0.70" in notices[0].message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sound_type", "heartbeat"),
        ("sound_type", "not_auscultation"),
        ("age_group", "neonate"),
        ("site", "x" * 65),
    ],
)
def test_client_statements_are_checked(field: str, value: str) -> None:
    with pytest.raises(InvalidQuery, match=field):
        ClientContext.parse(**{field: value})


def test_client_statements_are_normalised() -> None:
    assert ClientContext.parse("lung", "adult", "  posterior left ") == ClientContext(
        "lung", "adult", "posterior left"
    )
    assert ClientContext.parse(site="   ") == ClientContext()
