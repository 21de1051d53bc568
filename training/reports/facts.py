"""What a record's metadata supports: the facts a report may state, must state, and knows to be absent.

One :class:`FactSheet` per record, built from the typed metadata of each dataset. The template writer
states (a selection of) these facts; the validator checks any report, from any writer, against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from acula.training.data.bmd_hs import DISEASE_NAMES, BmdMeta
from acula.training.data.circor2022 import LOCATIONS, CirCorMeta
from acula.training.data.coswara import CoswaraMeta
from acula.training.data.hls_cmds import HlsMeta
from acula.training.data.icbhi2017 import IcbhiMeta
from acula.training.data.physionet2016 import PhysioNetMeta
from acula.training.data.records import Recording
from acula.training.data.sprsound import SprSoundMeta
from acula.training.reports.vocabulary import closure

SPR_EVENTS = {
    "Rhonchi": ("finding:rhonchi",),
    "Wheeze": ("finding:wheeze",),
    "Stridor": ("finding:stridor",),
    "Coarse Crackle": ("finding:coarse crackle",),
    "Fine Crackle": ("finding:fine crackle",),
    "Wheeze+Crackle": ("finding:wheeze", "finding:crackle"),
}
HLS_HEART = {
    "Normal": (),
    "S3": ("finding:s3",),
    "S4": ("finding:s4",),
    "AV Block": ("finding:av block",),
    "Atrial Fibrillation": ("finding:atrial fibrillation",),
    "Tachycardia": ("finding:tachycardia",),
    "Early Systolic Murmur": ("finding:early systolic murmur",),
    "Mid Systolic Murmur": ("finding:mid systolic murmur",),
    "Late Systolic Murmur": ("finding:late systolic murmur",),
    "Late Diastolic Murmur": ("finding:late diastolic murmur",),
}
HLS_LUNG = {
    "Normal": (),
    "Wheezing": ("finding:wheeze",),
    "Rhonchi": ("finding:rhonchi",),
    "Fine Crackles": ("finding:fine crackle",),
    "Coarse Crackles": ("finding:coarse crackle",),
    "Pleural Rub": ("finding:pleural rub",),
}
ICBHI_DIAGNOSES = {
    "COPD": "diagnosis:copd",
    "URTI": "diagnosis:urti",
    "LRTI": "diagnosis:lrti",
    "Asthma": "diagnosis:asthma",
    "Pneumonia": "diagnosis:pneumonia",
    "Bronchiectasis": "diagnosis:bronchiectasis",
    "Bronchiolitis": "diagnosis:bronchiolitis",
}
CIRCOR_TIMING = {
    "Early-systolic": "finding:early systolic murmur",
    "Mid-systolic": "finding:mid systolic murmur",
    "Late-systolic": "finding:late systolic murmur",
    "Holosystolic": "finding:holosystolic murmur",
    "Early-diastolic": "finding:early diastolic murmur",
    "Mid-diastolic": "finding:mid diastolic murmur",
    "Holodiastolic": "finding:holodiastolic murmur",
}
CIRCOR_AGE = {
    "Neonate": ("age_group:neonate", "age_group:child"),
    "Infant": ("age_group:infant", "age_group:child"),
    "Child": ("age_group:child",),
    "Adolescent": ("age_group:adolescent", "age_group:child"),
    "Young Adult": ("age_group:adult",),
}


@dataclass
class FactSheet:
    """Facts supported by the metadata (``present``, closed under generalisation), facts known to be absent
    (a report may negate them), facts a report must state, and the numeric age when known."""

    present: set[str] = field(default_factory=set)
    absent: set[str] = field(default_factory=set)
    required: list[str] = field(default_factory=list)
    age_years: float | None = None
    site: str | None = None

    def add(self, *facts: str) -> None:
        self.present |= closure(set(facts))

    def require(self, *facts: str) -> None:
        self.add(*facts)
        self.required += [f for f in facts if f not in self.required]


def age_groups(age: float) -> tuple[str, ...]:
    """Words a clinician may use for this age (an infant is also a child)."""
    groups = []
    if age < 28 / 365.25:
        groups.append("age_group:neonate")
    if age < 1:
        groups.append("age_group:infant")
    if age < 18:
        groups.append("age_group:child")
    if 10 <= age < 20:
        groups.append("age_group:adolescent")
    if age >= 18:
        groups.append("age_group:adult")
    if age >= 65:
        groups.append("age_group:older adult")
    return tuple(groups)


def _site_facts(site: str | None) -> list[str]:
    if not site:
        return []
    words = site.lower()
    out = [f"side:{s}" for s in ("left", "right") if s in words.split()]
    for region in ("posterior", "anterior", "lateral"):
        if region in words:
            out.append(f"region:{region}")
    for key in ("trachea", "apex", "sternal border"):
        if key in words:
            out.append(f"region:{key}")
    for valve in ("aortic", "mitral", "pulmonic", "tricuspid"):
        if words.startswith(valve):
            out.append(f"region:{valve} area")
    return out


def _demographics(sheet: FactSheet, age: float | None, sex: str | None) -> None:
    if age is not None:
        sheet.age_years = age
        sheet.add(*age_groups(age))
    if sex:
        sheet.add(f"sex:{sex}")


def fact_sheet(record: Recording) -> FactSheet:
    """The facts ``record``'s metadata supports (see the module docstring)."""
    sheet = FactSheet(site=record.site)
    sheet.add(*_site_facts(record.site))
    meta = record.metadata
    if isinstance(meta, SprSoundMeta):
        _spr(sheet, meta)
    elif isinstance(meta, PhysioNetMeta):
        sheet.require("status:abnormal" if meta.abnormal else "status:normal")
    elif isinstance(meta, BmdMeta):
        _bmd(sheet, meta)
    elif isinstance(meta, CoswaraMeta):
        _coswara(sheet, meta)
    elif isinstance(meta, HlsMeta):
        _hls(sheet, meta)
    elif isinstance(meta, IcbhiMeta):
        _icbhi(sheet, meta)
    elif isinstance(meta, CirCorMeta):
        _circor(sheet, meta)
    else:
        raise TypeError(f"no fact sheet for metadata of type {type(meta).__name__} ({record.dataset})")
    return sheet


def _spr(sheet: FactSheet, meta: SprSoundMeta) -> None:
    _demographics(sheet, meta.age_years, meta.sex)
    label = meta.record_label
    events = [fact for e in meta.events for fact in SPR_EVENTS.get(e.type, ())]
    sheet.add(*events)
    if label == "Poor Quality":
        sheet.require("quality:poor")
    elif label == "Normal":
        sheet.require("status:normal")
        sheet.absent |= {"finding:adventitious sound"}
    else:
        if "CAS" in label:
            sheet.require("finding:continuous adventitious sound")
        if "DAS" in label:
            sheet.require("finding:discontinuous adventitious sound")
        sheet.add("status:abnormal")


def _bmd(sheet: FactSheet, meta: BmdMeta) -> None:
    patient = meta.patient
    _demographics(sheet, patient.age_years, patient.sex)
    sheet.add(f"position:{meta.position}")
    if patient.smoker:
        sheet.add("history:smoker")
    if patient.N:
        sheet.require("status:normal")
        sheet.absent |= {"diagnosis:valvular disease"} | {f"diagnosis:{n}" for n in DISEASE_NAMES.values()}
    elif patient.N is False:
        for code, name in DISEASE_NAMES.items():
            if getattr(patient, code):
                sheet.require(f"diagnosis:{name}")
            else:
                sheet.absent.add(f"diagnosis:{name}")
        sheet.add("status:abnormal")


def _coswara(sheet: FactSheet, meta: CoswaraMeta) -> None:
    p = meta.participant
    _demographics(sheet, p.age_years, p.sex)
    status = p.covid_status or ""
    if status == "healthy":
        sheet.require("status:healthy")
    elif status.startswith("positive"):
        sheet.require("diagnosis:covid-19")
        severity = status.removeprefix("positive_")
        if severity in ("mild", "moderate", "severe"):
            sheet.add(f"severity:{severity}")
    elif status == "resp_illness_not_identified":
        sheet.require("diagnosis:respiratory illness")
        sheet.absent.add("diagnosis:covid-19")
    elif status == "no_resp_illness_exposed":
        sheet.require("history:exposure")
        sheet.add("diagnosis:covid-19")  # "exposed to COVID-19" names the disease without diagnosing it
        sheet.absent.add("diagnosis:respiratory illness")
    elif status == "recovered_full":
        sheet.add("diagnosis:covid-19")
    conditions = {
        "smoker": "history:smoker",
        "asthma": "diagnosis:asthma",
        "hypertension": "diagnosis:hypertension",
        "diabetes": "diagnosis:diabetes",
        "fever": "symptom:fever",
        "pneumonia": "diagnosis:pneumonia",
    }
    for name, fact in conditions.items():
        if name in p.conditions:
            sheet.add(fact)
    if meta.quality == 0:
        sheet.add("quality:poor")


def _hls(sheet: FactSheet, meta: HlsMeta) -> None:
    if meta.manikin_sex:
        sheet.add(f"sex:{meta.manikin_sex}")
    for kind, table, value in (("heart", HLS_HEART, meta.heart_sound), ("lung", HLS_LUNG, meta.lung_sound)):
        if value is None:
            continue
        facts = table.get(value, ())
        if facts:
            sheet.require(*facts)
            sheet.add("status:abnormal")
        else:
            sheet.require("status:normal")
            if kind == "lung":
                sheet.absent.add("finding:adventitious sound")
            else:
                sheet.absent.add("finding:murmur")


def _icbhi(sheet: FactSheet, meta: IcbhiMeta) -> None:
    p = meta.patient
    _demographics(sheet, p.age_years, p.sex)
    if p.diagnosis == "Healthy":
        sheet.require("status:healthy")
    elif p.diagnosis in ICBHI_DIAGNOSES:
        sheet.require(ICBHI_DIAGNOSES[p.diagnosis])
    if meta.cycles is not None:
        crackles = any(c.crackles for c in meta.cycles)
        wheezes = any(c.wheezes for c in meta.cycles)
        if crackles:
            sheet.require("finding:crackle")
        if wheezes:
            sheet.require("finding:wheeze")
        if not crackles:
            sheet.absent.add("finding:crackle")
        if not wheezes:
            sheet.absent.add("finding:wheeze")
        if not crackles and not wheezes and p.diagnosis == "Healthy":
            sheet.add("status:normal")
        if crackles or wheezes:
            sheet.add("status:abnormal")


def _circor(sheet: FactSheet, meta: CirCorMeta) -> None:
    if meta.age_group:
        sheet.add(*CIRCOR_AGE.get(meta.age_group, ()))
    if meta.sex:
        sheet.add(f"sex:{meta.sex}")
    if meta.pregnant:
        sheet.add("history:pregnant")
    for loc in meta.murmur_locations:
        sheet.add(*_site_facts(LOCATIONS.get(loc)))
    if meta.murmur == "Present":
        sheet.require("finding:murmur")
        for part in (meta.systolic, meta.diastolic):
            if part.timing in CIRCOR_TIMING:
                sheet.add(CIRCOR_TIMING[part.timing])
            if part.grading:
                sheet.add(f"severity:grade {part.grading.upper()}")
    elif meta.murmur == "Absent":
        sheet.absent.add("finding:murmur")
    if meta.outcome == "Abnormal":
        sheet.require("status:abnormal")
    elif meta.outcome == "Normal":
        sheet.require("status:normal")
