"""Which probes answer for an upload: the sound-type gate, in one pure module.

A probe was trained on one kind of recording (its manifest ``domain``: sound types, population...). Its
answer for any other kind is a number without meaning: a lung-sound classifier asked about a heart
recording still returns a confident class. So ``/predict`` (and ``acula predict``, and the Python API)
decide the upload's sound type first, then run only the probes whose domain covers it, and say why each
other probe was left out. No I/O, no numpy and no HTTP here: inputs are the manifest's probe specs, the
client's statements and the sound-type classifier's answer; outputs are plain dataclasses the response is
built from, so every rule is tested directly (``tests/service/test_applicability.py``).

The rules:

- Sound type: one the client states (``heart``, ``lung``, ``cough``, ``breathing``) wins (source ``client``);
  the classifier's own answer is still reported, and a warning says when it confidently disagrees. Without
  one, the classifier's top class is used (source ``model``) when its probability reaches the manifest's
  ``min_probability``; a confident ``not_auscultation`` refuses the upload (the service's 422); an
  uncertain answer runs no probe and asks the client to state the sound type. So does an upload flagged
  out of distribution: the classifier's accuracy was measured on recordings like the training ones, and an
  adult lung recording from an unseen stethoscope can look more like the training heart sounds than like
  the training lung sounds, which would put a heart-valve probe's confident answer on a lung recording.
  The same holds for an upload that is unlike the training recordings *of the type the classifier names*
  (``unlike_its_type``: the out-of-distribution score against that type's reference rows only), even
  when some other training recording is near it.
  A bundle without a classifier and no client statement: source ``none``, no probe with a known domain
  runs.
- Diagnostic and quality probes run when their domain's sound types include the upload's, and, when the
  client states an age group, their population matches it (``mixed`` matches both).
- Demographic probes (age, sex) are benchmark tasks, not findings: they run only when named.
- A probe named by the client always runs (never silently dropped); if it would have been skipped, a
  ``not_applicable`` warning carries the reason.
- A probe whose domain is unknown (a version-1 bundle) runs with a ``domain_unknown`` warning.

Every probe of the bundle is either in the answer or in ``skipped``, never both, never neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

from acula.service.bundle import NOT_AUSCULTATION, SOUND_TYPES, ProbeSpec, SoundType
from acula.service.core.errors import InvalidQuery
from acula.service.core.probes import TaskOutput

AgeGroup = Literal["paediatric", "adult"]
AGE_GROUPS: tuple[AgeGroup, ...] = ("paediatric", "adult")
SoundTypeSource = Literal["client", "model", "none"]

# Why a probe was not run (``skipped[].reason``), or why a named one that ran may not apply
# (``warnings[].reason`` of a ``not_applicable`` warning). Stable: clients may branch on them.
SOUND_TYPE_MISMATCH = "sound_type_mismatch"
POPULATION_MISMATCH = "population_mismatch"
SOUND_TYPE_UNCERTAIN = "sound_type_uncertain"
SOUND_TYPE_UNKNOWN = "sound_type_unknown"
DEMOGRAPHIC_NOT_REQUESTED = "demographic_not_requested"
NOT_REQUESTED = "not_requested"

# Warning codes (``warnings[].code``).
NOT_APPLICABLE = "not_applicable"
DOMAIN_UNKNOWN = "domain_unknown"
SOUND_TYPE_DISAGREES = "sound_type_disagrees"
SITE_NOT_SEEN = "site_not_seen"
OUT_OF_DISTRIBUTION = "out_of_distribution"
POOR_QUALITY = "poor_quality"
# SOUND_TYPE_UNCERTAIN and SOUND_TYPE_UNKNOWN are warnings too: the upload's, not one probe's.

SKIP_REASONS = (
    SOUND_TYPE_MISMATCH,
    POPULATION_MISMATCH,
    SOUND_TYPE_UNCERTAIN,
    SOUND_TYPE_UNKNOWN,
    DEMOGRAPHIC_NOT_REQUESTED,
    NOT_REQUESTED,
)
WARNING_CODES = (
    NOT_APPLICABLE,
    DOMAIN_UNKNOWN,
    SOUND_TYPE_UNCERTAIN,
    SOUND_TYPE_UNKNOWN,
    SOUND_TYPE_DISAGREES,
    SITE_NOT_SEEN,
    OUT_OF_DISTRIBUTION,
    POOR_QUALITY,
)


MAX_SITE_CHARS = 64  # an auscultation site's name ("posterior left", "Aor"), not free text


@dataclass(frozen=True)
class ClientContext:
    """What the client states about the recording; every field optional."""

    sound_type: SoundType | None = None
    age_group: AgeGroup | None = None
    site: str | None = None

    @classmethod
    def parse(
        cls, sound_type: str | None = None, age_group: str | None = None, site: str | None = None
    ) -> ClientContext:
        """From untyped input (query parameters, CLI options, Python API arguments), one way for all three:
        an invalid value is an ``invalid_query`` naming the allowed ones."""
        if sound_type is not None and sound_type not in SOUND_TYPES:
            raise InvalidQuery(f"sound_type must be one of {list(SOUND_TYPES)}, not {sound_type!r}")
        if age_group is not None and age_group not in AGE_GROUPS:
            raise InvalidQuery(f"age_group must be one of {list(AGE_GROUPS)}, not {age_group!r}")
        site = (site or "").strip() or None
        if site is not None and len(site) > MAX_SITE_CHARS:
            raise InvalidQuery(f"site is at most {MAX_SITE_CHARS} characters")
        return cls(cast(SoundType | None, sound_type), cast(AgeGroup | None, age_group), site)


@dataclass(frozen=True)
class ProbeRequest:
    """A validated ``/predict`` request: the tasks named (empty: every applicable probe) and the context."""

    tasks: tuple[str, ...] = ()
    context: ClientContext = field(default_factory=ClientContext)


@dataclass(frozen=True)
class Notice:
    """A warning in the answer: a stable ``code``, a message for people, the probe it concerns if any, and
    for ``not_applicable`` the skip reason it overrode."""

    code: str
    message: str
    task: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Skip:
    """A probe of the bundle that was not run, and why (``reason`` is one of :data:`SKIP_REASONS`)."""

    task: str
    reason: str
    message: str


@dataclass(frozen=True)
class SoundTypeDecision:
    """The sound type the probes are gated on, where it came from, and the classifier's own answer.

    ``value`` is None when none could be used; ``reason`` then says why (``sound_type_uncertain``,
    ``sound_type_unknown`` or ``not_auscultation``). ``probability`` is the classifier's probability of
    ``value`` (None without a classifier or a value).
    """

    value: SoundType | None
    source: SoundTypeSource
    probability: float | None = None
    model: TaskOutput | None = None
    reason: str | None = None
    notices: tuple[Notice, ...] = ()


@dataclass(frozen=True)
class Selection:
    """The probes to run (manifest order), those left out, and the warnings to return."""

    run: list[str]
    skipped: list[Skip]
    notices: list[Notice]


def decide_sound_type(
    stated: SoundType | None,
    model: TaskOutput | None,
    min_probability: float,
    out_of_distribution: bool = False,
    unlike_its_type: bool = False,
) -> SoundTypeDecision:
    """The sound type to gate on, from the client's statement and the classifier's answer (either may be
    missing), whether the upload was flagged out of distribution, and whether it is unlike the training
    recordings of the classifier's top sound type. See the module docstring."""
    top = model.label if model is not None else None
    top_p = model.probabilities.get(top, 0.0) if model is not None and top is not None else 0.0
    confident = top is not None and top_p >= min_probability
    if stated is not None:
        notices: tuple[Notice, ...] = ()
        if confident and top != stated:
            notices = (
                Notice(
                    SOUND_TYPE_DISAGREES,
                    f"you stated {stated!r}; the model hears {top!r} (probability {top_p:.2f}): check the "
                    "recording; the probes were chosen for the stated sound type",
                ),
            )
        probability = model.probabilities.get(stated) if model is not None else None
        return SoundTypeDecision(stated, "client", probability, model, notices=notices)
    if model is None or top is None:
        return SoundTypeDecision(
            None,
            "none",
            reason=SOUND_TYPE_UNKNOWN,
            notices=(
                Notice(
                    SOUND_TYPE_UNKNOWN,
                    "this model has no sound-type classifier: state sound_type (heart, lung, cough or "
                    "breathing) to get the probes that apply",
                ),
            ),
        )
    if not confident:
        return _uncertain(
            model,
            f"the model cannot tell the sound type (best guess {top!r}, probability {top_p:.2f}, "
            f"below {min_probability:.2f})",
        )
    if top == NOT_AUSCULTATION:
        return SoundTypeDecision(None, "model", top_p, model, reason=NOT_AUSCULTATION)
    if out_of_distribution:
        return _uncertain(
            model,
            "the recording is unlike the model's training recordings, so its sound type is not taken "
            f"from the model (best guess {top!r}, probability {top_p:.2f})",
        )
    if unlike_its_type:
        return _uncertain(
            model,
            f"the recording is unlike the model's training {top} recordings, so its sound type is not taken "
            f"from the model (best guess {top!r}, probability {top_p:.2f})",
        )
    # The pipeline checks at load that the classifier's labels are sound types or not_auscultation.
    return SoundTypeDecision(cast(SoundType, top), "model", top_p, model)


def _uncertain(model: TaskOutput, why: str) -> SoundTypeDecision:
    """No sound type from the model (``why``): no probe runs, and the client is asked to state one."""
    message = f"{why}: state sound_type (heart, lung, cough or breathing) to get the probes that apply"
    return SoundTypeDecision(
        None,
        "model",
        model=model,
        reason=SOUND_TYPE_UNCERTAIN,
        notices=(Notice(SOUND_TYPE_UNCERTAIN, message),),
    )


def demographic_message(task: str) -> str:
    return f"{task} predicts a demographic trait, not a finding: it is answered only when named in tasks"


def mismatch_message(task: str, trained_on: Sequence[str], value: str, source: str) -> str:
    whose = "as you stated" if source == "client" else "according to the model"
    return f"{task} was trained on {' or '.join(trained_on)} recordings; this upload is {value}, {whose}"


def _mismatch(spec: ProbeSpec, decision: SoundTypeDecision, context: ClientContext) -> Skip | None:
    """Why a probe with a known domain does not apply to this upload, or None when it does."""
    domain, task = spec.domain, spec.task
    if decision.value is None:
        reason = decision.reason or SOUND_TYPE_UNKNOWN
        wanted = " or ".join(domain.sound_types)
        return Skip(task, reason, f"the upload's sound type is not known; {task} is for {wanted} recordings")
    if decision.value not in domain.sound_types:
        message = mismatch_message(task, domain.sound_types, decision.value, decision.source)
        return Skip(task, SOUND_TYPE_MISMATCH, message)
    age = context.age_group
    if age is not None and domain.population in AGE_GROUPS and domain.population != age:
        return Skip(
            task,
            POPULATION_MISMATCH,
            f"{task} was trained on {domain.population} recordings; you stated {age}",
        )
    return None


def _site_notice(spec: ProbeSpec, site: str | None) -> list[Notice]:
    """Sites are advisory: datasets name them differently, so an unseen site warns rather than skips."""
    sites = {s.lower() for s in spec.domain.sites}
    if site is None or not sites or site.lower() in sites:
        return []
    return [
        Notice(
            SITE_NOT_SEEN,
            f"{spec.task} saw recordings from {', '.join(spec.domain.sites)}, not {site!r}",
            task=spec.task,
        )
    ]


def select_probes(
    probes: Sequence[ProbeSpec], decision: SoundTypeDecision, request: ProbeRequest
) -> Selection:
    """Apply the rules of the module docstring to every probe of the bundle, in manifest order."""
    named = set(request.tasks)
    run: list[str] = []
    skipped: list[Skip] = []
    notices: list[Notice] = list(decision.notices)
    for spec in probes:
        task = spec.task
        if named and task not in named:
            skipped.append(Skip(task, NOT_REQUESTED, f"you named other tasks; {task} was not among them"))
            continue
        if not named and spec.purpose == "demographic":
            skipped.append(Skip(task, DEMOGRAPHIC_NOT_REQUESTED, demographic_message(task)))
            continue
        if not spec.domain.known:
            run.append(task)
            notices.append(
                Notice(
                    DOMAIN_UNKNOWN,
                    f"the bundle does not say which recordings {task} applies to (a version-1 bundle): "
                    "its answer was not checked against the upload's sound type",
                    task=task,
                )
            )
            continue
        mismatch = _mismatch(spec, decision, request.context)
        if mismatch is None:
            run.append(task)
            notices += _site_notice(spec, request.context.site)
        elif named:
            run.append(task)
            notices.append(
                Notice(
                    NOT_APPLICABLE,
                    f"answered because you named it, but it may not apply: {mismatch.message}",
                    task=task,
                    reason=mismatch.reason,
                )
            )
        else:
            skipped.append(mismatch)
    return Selection(run, skipped, notices)


def quality_notices(outputs: dict[str, TaskOutput]) -> list[Notice]:
    """A ``poor_quality`` warning for each quality probe whose positive (last) class won.

    Binary tasks store their classes as (negative, positive), and the quality tasks' positive class is the
    poor-quality one (``("usable", "poor quality")``).
    """
    notices = []
    for output in outputs.values():
        labels = list(output.probabilities)
        if output.purpose != "quality" or output.kind != "classification" or len(labels) != 2:
            continue
        if output.label == labels[-1]:
            notices.append(
                Notice(
                    POOR_QUALITY,
                    f"{output.task}: the recording looks like one annotators marked {labels[-1]!r} "
                    f"(probability {output.probabilities[labels[-1]]:.2f}): re-record if you can, and "
                    "read the other answers with caution",
                    task=output.task,
                )
            )
    return notices


def out_of_distribution_notice(score: float, threshold: float) -> Notice:
    return Notice(
        OUT_OF_DISTRIBUTION,
        f"the recording is unlike the model's training recordings (score {score:.3f} above {threshold:.3f}): "
        "its answers may not hold for it",
    )
