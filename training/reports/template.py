"""The default report writer: clinician-style text from metadata only, deterministic for a given seed.

Each dataset family has a few phrasings per slot (header, patient, site, findings, impression); which one is
used is drawn from a generator seeded with (seed, dataset, recording id), so a corpus is reproducible and
yet not one sentence repeated. Only what the metadata says is written: for PhysioNet 2016 (normal or
abnormal, nothing else) the report is short, and says so.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

from acula.training.data.bmd_hs import DISEASE_NAMES, BmdMeta
from acula.training.data.circor2022 import LOCATIONS, CirCorMeta
from acula.training.data.coswara import CoswaraMeta
from acula.training.data.hls_cmds import HlsMeta
from acula.training.data.icbhi2017 import IcbhiMeta
from acula.training.data.physionet2016 import PhysioNetMeta
from acula.training.data.records import Recording
from acula.training.data.sprsound import SprSoundMeta
from acula.training.reports.facts import HLS_HEART, HLS_LUNG, SPR_EVENTS
from acula.training.reports.schema import Report

MODEL = "template-v1"
HLS_HEART_TEXT = {
    "Normal": "normal S1 and S2",
    "S3": "an S3 (third heart sound)",
    "S4": "an S4 (fourth heart sound)",
    "AV Block": "atrioventricular block",
    "Atrial Fibrillation": "atrial fibrillation",
    "Tachycardia": "tachycardia",
    "Early Systolic Murmur": "an early systolic murmur",
    "Mid Systolic Murmur": "a mid-systolic murmur",
    "Late Systolic Murmur": "a late systolic murmur",
    "Late Diastolic Murmur": "a late diastolic murmur",
}
HLS_LUNG_TEXT = {
    "Normal": "normal vesicular breath sounds without adventitious sounds",
    "Wheezing": "wheezes",
    "Rhonchi": "rhonchi",
    "Fine Crackles": "fine crackles",
    "Coarse Crackles": "coarse crackles",
    "Pleural Rub": "a pleural friction rub",
}
COSWARA_SOUNDS = {
    "cough-heavy": "a heavy (deep) voluntary cough",
    "cough-shallow": "a shallow voluntary cough",
    "breathing-deep": "deep breathing at the mouth",
    "breathing-shallow": "shallow breathing at the mouth",
    "counting-normal": "counting at a normal pace",
    "counting-fast": "counting at a fast pace",
}


def _fmt(value: float) -> str:
    return f"{value:g}"


def person(age: float | None, sex: str | None) -> tuple[str, list[str]]:
    """'4.9-year-old girl' / '9-month-old infant' / 'adult woman' ... and the facts it states."""
    facts = []
    if sex:
        facts.append(f"sex:{sex}")
    if age is None:
        noun = {"male": "male patient", "female": "female patient"}.get(sex or "", "patient")
        return noun, facts
    facts.append(f"age_years:{_fmt(age)}")
    if age < 1:
        months = max(1, round(age * 12))
        noun = {"male": "male infant", "female": "female infant"}.get(sex or "", "infant")
        return f"{months}-month-old {noun}", facts
    if age < 18:
        noun = {"male": "boy", "female": "girl"}.get(sex or "", "child")
    else:
        noun = {"male": "man", "female": "woman"}.get(sex or "", "adult")
    return f"{_fmt(age)}-year-old {noun}", facts


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def a(phrase: str) -> str:
    """'a' or 'an' before ``phrase`` ('an 8.1-year-old', 'an early-systolic murmur', 'a 4-year-old')."""
    vowel = phrase[:1].lower() in "aeiou" or phrase.startswith(("8", "11-", "18-", "11.", "18."))
    return ("an " if vowel else "a ") + phrase


def _spr_event_words(kinds: Sequence[str]) -> list[str]:
    """Distinct sound words for SPRSound event types: 'Wheeze+Crackle' with 'Wheeze' gives 'wheezes and
    crackles' (not 'combined wheezes and crackles and wheezes'); fine or coarse crackles make 'crackles'
    redundant."""
    findings = list(dict.fromkeys(fact for kind in kinds for fact in SPR_EVENTS.get(kind, ())))
    if any(f in findings for f in ("finding:fine crackle", "finding:coarse crackle")):
        findings = [f for f in findings if f != "finding:crackle"]
    words = {
        "finding:wheeze": "wheezes",
        "finding:crackle": "crackles",
        "finding:fine crackle": "fine crackles",
        "finding:coarse crackle": "coarse crackles",
        "finding:rhonchi": "rhonchi",
        "finding:stridor": "stridor",
    }
    return [words.get(f, f.split(":", 1)[1]) for f in findings]


class TemplateWriter:
    """``write(record) -> Report``; see the module docstring."""

    name = "template"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rng(self, record: Recording) -> random.Random:
        key = f"{self.seed}:{record.dataset}:{record.recording_id}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))

    def write(self, record: Recording) -> Report:
        builders: dict[type, Callable[[Recording, random.Random], tuple[list[str], list[str]]]] = {
            SprSoundMeta: self._sprsound,
            PhysioNetMeta: self._physionet,
            BmdMeta: self._bmd,
            CoswaraMeta: self._coswara,
            HlsMeta: self._hls,
            IcbhiMeta: self._icbhi,
            CirCorMeta: self._circor,
        }
        builder = builders.get(type(record.metadata))
        if builder is None:
            raise TypeError(f"no template for {record.dataset} metadata {type(record.metadata).__name__}")
        sentences, facts = builder(record, self.rng(record))
        text = " ".join(_cap(s.strip()) for s in sentences if s.strip())
        prompt_hash = hashlib.sha256(f"{MODEL}:{self.seed}".encode()).hexdigest()[:16]
        return Report(
            text=text,
            facts=list(dict.fromkeys(facts)),
            writer=self.name,
            model=MODEL,
            prompt_hash=prompt_hash,
        )

    # --- SPRSound: paediatric lung sounds ---------------------------------------------------------------
    def _sprsound(self, record: Recording, rng: random.Random) -> tuple[list[str], list[str]]:
        meta = record.metadata
        assert isinstance(meta, SprSoundMeta)
        who, facts = person(meta.age_years, meta.sex)
        facts += [f"site:{meta.site}", f"label:{meta.record_label}"]
        kinds = list(dict.fromkeys(e.type for e in meta.events if e.type != "Normal"))
        facts += [fact for k in kinds for fact in SPR_EVENTS[k]]  # normalised: 'finding:wheeze'
        header = rng.choice(
            [
                "Paediatric lung auscultation.",
                "Paediatric respiratory auscultation report.",
                "Lung sounds, paediatric respiratory clinic.",
            ]
        )
        patient = rng.choice([f"Patient: {who}.", f"{_cap(a(who))} was examined.", f"Examined: {who}."])
        site = rng.choice(
            [
                f"Site: {meta.site}.",
                f"Recorded over the {meta.site}.",
                f"Stethoscope placed on the {meta.site}.",
            ]
        )
        events = _join(_spr_event_words(kinds))
        label = meta.record_label
        if label == "Normal":
            findings = rng.choice(
                [
                    "Breath sounds are normal, without adventitious sounds.",
                    "Normal breath sounds; no adventitious sounds heard.",
                    "No adventitious sounds; breath sounds normal throughout.",
                ]
            )
            impression = rng.choice(["Impression: normal lung sounds.", "Impression: normal auscultation."])
        elif label == "Poor Quality":
            findings = rng.choice(
                [
                    "The recording is of poor quality and could not be graded.",
                    "Poor signal quality; the recording was not graded.",
                ]
            )
            impression = "Impression: uninterpretable recording."
        else:
            parts = []
            if "CAS" in label:
                parts.append("continuous adventitious sounds")
            if "DAS" in label:
                parts.append("discontinuous adventitious sounds")
            present = _join(parts)
            if events:
                findings = rng.choice(
                    [
                        f"{_cap(present)} are heard: {events}.",
                        f"Auscultation reveals {events} ({present}).",
                        f"{_cap(events)} heard, consistent with {present}.",
                    ]
                )
            else:
                findings = f"{_cap(present)} are heard."
            impression = rng.choice(
                [f"Impression: {present} ({label}).", f"Impression: {label} pattern, {present}."]
            )
        order = [header, patient, site, findings, impression]
        if rng.random() < 0.3:
            order = [header, site, patient, findings, impression]
        return order, facts

    # --- PhysioNet 2016: normal / abnormal only ---------------------------------------------------------
    def _physionet(self, record: Recording, rng: random.Random) -> tuple[list[str], list[str]]:
        meta = record.metadata
        assert isinstance(meta, PhysioNetMeta)
        status = "abnormal" if meta.abnormal else "normal"
        header = rng.choice(
            [
                "Heart sound recording (phonocardiogram).",
                "Phonocardiogram.",
                "Cardiac auscultation recording.",
            ]
        )
        finding = rng.choice(
            [
                f"Classified as {status}.",
                f"Overall assessment: {status} heart sound recording.",
                f"Heart sounds judged {status}.",
            ]
        )
        sparse = rng.choice(
            ["No further clinical details are available.", "Site and patient details not recorded.", ""]
        )
        return [header, finding, sparse], [f"label:{status}"]

    # --- BMD-HS: valvular disease, adults ---------------------------------------------------------------
    def _bmd(self, record: Recording, rng: random.Random) -> tuple[list[str], list[str]]:
        meta = record.metadata
        assert isinstance(meta, BmdMeta)
        p = meta.patient
        who, facts = person(p.age_years, p.sex)
        facts += [f"site:{meta.site}", f"position:{meta.position}"]
        header = rng.choice(
            ["Cardiac auscultation.", "Heart sound examination.", "Cardiology clinic auscultation."]
        )
        patient = rng.choice([f"Patient: {who}", _cap(a(who)), _cap(who)])
        if p.smoker:
            patient += rng.choice([", smoker.", ", current smoker."])
            facts.append("history:smoker")
        else:
            patient += "."
        site = rng.choice(
            [
                f"Recorded at the {meta.site} with the patient {meta.position}.",
                f"Site: {meta.site}, {meta.position}.",
                f"Auscultation over the {meta.site}, patient {meta.position}.",
            ]
        )
        diseases = [name for code, name in DISEASE_NAMES.items() if getattr(p, code)]
        if p.N:
            findings = rng.choice(
                [
                    "No valvular disease; the heart is reported normal.",
                    "Cardiac diagnosis: normal, without valvular disease.",
                ]
            )
            facts.append("label:normal")
        elif diseases:
            kind = "multi-valvular disease" if len(diseases) > 1 else "valvular disease"
            findings = rng.choice(
                [
                    f"Known diagnosis: {_join(diseases)}.",
                    f"Diagnosed {kind}: {_join(diseases)}.",
                    f"Impression: {kind} ({_join(diseases)}).",
                ]
            )
            facts += [f"diagnosis:{d}" for d in diseases]
        else:
            findings = "No diagnosis label is available for this recording."
        return [header, patient, site, findings], facts

    # --- Coswara: cough and breathing, self-reported health ----------------------------------------------
    def _coswara(self, record: Recording, rng: random.Random) -> tuple[list[str], list[str]]:
        meta = record.metadata
        assert isinstance(meta, CoswaraMeta)
        p = meta.participant
        who, facts = person(p.age_years, p.sex)
        sound = COSWARA_SOUNDS.get(meta.sound_type, meta.sound_type.replace("-", " "))
        facts.append(f"sound:{meta.sound_type}")
        header = rng.choice(
            [
                f"Audio recording of {sound}.",
                f"Respiratory sound sample: {sound}.",
                f"Recorded task: {sound}.",
            ]
        )
        patient = rng.choice([f"Participant: {who}.", f"Recorded from {a(who)}.", f"Subject: {who}."])
        status = p.covid_status or ""
        status_text = {
            "healthy": rng.choice(
                ["Self-reported health status: healthy.", "The participant reports being healthy."]
            ),
            "resp_illness_not_identified": "Self-reported respiratory illness, not identified as COVID-19.",
            "no_resp_illness_exposed": "No respiratory illness reported; reported exposure to COVID-19.",
            "positive_mild": "Reported COVID-19, mild.",
            "positive_moderate": "Reported COVID-19, moderate.",
            "positive_asymp": "Reported COVID-19 without symptoms.",
            "recovered_full": "Reported full recovery from COVID-19.",
        }.get(status, "")
        if status:
            facts.append(f"status:{status}")
        words = {
            "smoker": "smoker",
            "asthma": "asthma",
            "hypertension": "hypertension",
            "diabetes": "diabetes",
            "fever": "fever",
            "pneumonia": "pneumonia",
        }
        reported = [words[c] for c in p.conditions if c in words]
        history = f"Reported history: {_join(reported)}." if reported else ""
        facts += [f"history:{c}" for c in reported]
        quality = {
            0: "Annotated recording quality: poor quality.",
            1: "Annotated recording quality: good.",
            2: "Annotated recording quality: excellent.",
        }.get(meta.quality or -1, "")
        if meta.quality == 0:
            quality = "Annotated as poor quality."
        return [header, patient, status_text, history, quality], facts

    # --- HLS-CMDS: manikin ------------------------------------------------------------------------------
    def _hls(self, record: Recording, rng: random.Random) -> tuple[list[str], list[str]]:
        meta = record.metadata
        assert isinstance(meta, HlsMeta)
        setting = f" ({meta.manikin_sex} setting)" if meta.manikin_sex else ""
        header = rng.choice(
            [
                f"Simulated auscultation on a clinical manikin{setting}.",
                f"Manikin training recording{setting}, not a patient.",
            ]
        )
        facts = [f"site:{meta.site}", f"component:{meta.component}"]
        if meta.manikin_sex:
            facts.append(f"sex:{meta.manikin_sex}")
        site = rng.choice([f"Site: {meta.site}.", f"Recorded at the {meta.site}."])
        lines = [header, site]
        if meta.heart_sound:
            heart = HLS_HEART_TEXT.get(meta.heart_sound, meta.heart_sound.lower())
            lines.append(rng.choice([f"Heart sounds: {heart}.", f"Cardiac auscultation: {heart}."]))
            facts += [f"heart:{meta.heart_sound.lower()}", *HLS_HEART.get(meta.heart_sound, ())]
        if meta.lung_sound:
            lung = HLS_LUNG_TEXT.get(meta.lung_sound, meta.lung_sound.lower())
            lines.append(rng.choice([f"Lung sounds: {lung}.", f"Breath sounds: {lung}."]))
            facts += [f"lung:{meta.lung_sound.lower()}", *HLS_LUNG.get(meta.lung_sound, ())]
        return lines, facts

    # --- ICBHI 2017: respiratory diagnoses, cycle annotations ---------------------------------------------
    def _icbhi(self, record: Recording, rng: random.Random) -> tuple[list[str], list[str]]:
        meta = record.metadata
        assert isinstance(meta, IcbhiMeta)
        p = meta.patient
        who, facts = person(p.age_years, p.sex)
        facts += [f"site:{meta.site}", f"diagnosis:{p.diagnosis.lower()}", f"device:{meta.device}"]
        header = rng.choice(
            ["Respiratory auscultation.", "Lung sound recording.", "Chest auscultation report."]
        )
        patient = rng.choice([f"Patient: {who}.", f"{_cap(a(who))} was examined."])
        site = rng.choice(
            [
                f"Site: {meta.site}, recorded with {a(meta.device)}.",
                f"Recorded over the {meta.site} using {a(meta.device)}.",
            ]
        )
        if p.diagnosis == "Healthy":
            diagnosis = rng.choice(["Healthy control, no respiratory diagnosis.", "Diagnosis: healthy."])
        else:
            diagnosis = rng.choice([f"Clinical diagnosis: {p.diagnosis}.", f"Known {p.diagnosis}."])
        lines = [header, patient, site]
        if meta.cycles is not None:
            n = len(meta.cycles)
            crackles = sum(c.crackles for c in meta.cycles)
            wheezes = sum(c.wheezes for c in meta.cycles)
            parts = [
                f"crackles in {crackles} of {n} cycles" if crackles else "no crackles",
                f"wheezes in {wheezes} of {n} cycles" if wheezes else "no wheezes",
            ]
            lines.append(f"{n} respiratory cycles annotated: {parts[0]}; {parts[1]}.")
            facts += [f"cycles:{n}", f"crackles:{crackles}", f"wheezes:{wheezes}"]
        lines.append(diagnosis)
        return lines, facts

    # --- CirCor 2022: rich murmur metadata, no audio ---------------------------------------------------
    def _circor(self, record: Recording, rng: random.Random) -> tuple[list[str], list[str]]:
        meta = record.metadata
        assert isinstance(meta, CirCorMeta)
        facts = []
        group = (meta.age_group or "").lower()
        sex_word = {"male": "male", "female": "female"}.get(meta.sex or "", "")
        noun = {
            "neonate": "neonate",
            "infant": "infant",
            "child": "child",
            "adolescent": "adolescent",
            "young adult": "young adult",
        }.get(group, "patient")
        who = f"{sex_word} {noun}".strip()
        if meta.age_group:
            facts.append(f"age_group:{group}")
        if meta.sex:
            facts.append(f"sex:{meta.sex}")
        header = rng.choice(["Cardiac auscultation screening.", "Cardiac auscultation screening report."])
        body = []
        if meta.height_cm is not None:
            body.append(f"height {_fmt(meta.height_cm)} cm")
            facts.append(f"height_cm:{_fmt(meta.height_cm)}")
        if meta.weight_kg is not None:
            body.append(f"weight {_fmt(meta.weight_kg)} kg")
            facts.append(f"weight_kg:{_fmt(meta.weight_kg)}")
        patient = f"Patient: {who}" + (f", {', '.join(body)}." if body else ".")
        if meta.pregnant:
            patient += " Pregnant."
            facts.append("history:pregnant")
        lines = [header, patient]
        if meta.murmur == "Present":
            s = meta.systolic
            desc = [x.lower() for x in (s.timing, s.shape) if x]
            murmur = " ".join(
                desc
                + (["systolic murmur"] if s.timing and "systolic" not in s.timing.lower() else ["murmur"])
            )
            details = []
            if s.grading:
                details.append(f"grade {s.grading}")
            if s.pitch:
                details.append(f"{s.pitch.lower()} pitch")
            if s.quality:
                details.append(f"{s.quality.lower()} quality")
            where = _join([LOCATIONS.get(loc, loc) for loc in meta.murmur_locations])
            sentence = _cap(a(murmur)) + (f" ({', '.join(details)})" if details else "") + " is heard"
            sentence += f" at the {where}." if where else "."
            lines.append(sentence)
            facts += ["finding:murmur"] + [f"murmur_location:{loc}" for loc in meta.murmur_locations]
            if s.grading:
                facts.append(f"severity:grade {s.grading}")
            d = meta.diastolic
            if d.timing:
                lines.append(
                    _cap(a(f"{d.timing.lower()} murmur"))
                    + (f", grade {d.grading}," if d.grading else "")
                    + " is also heard."
                )
        elif meta.murmur == "Absent":
            lines.append(rng.choice(["No murmur heard.", "No murmur on auscultation."]))
            facts.append("finding:no murmur")
        else:
            lines.append("The annotators could not determine whether a murmur is present.")
        if meta.outcome:
            lines.append(
                rng.choice(
                    [
                        f"Clinical outcome: {meta.outcome.lower()}.",
                        f"Outcome after expert review: {meta.outcome.lower()}.",
                    ]
                )
            )
            facts.append(f"label:{meta.outcome.lower()}")
        return lines, facts
