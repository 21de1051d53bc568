"""Checks a report against its record's metadata; every problem is a stable reason code.

A report is rejected when it states a finding, diagnosis, status, site or side, position, age, sex or
severity that the metadata does not support (negated mentions such as "no wheeze" are not claims, but they
may not deny what the metadata says is there), when it misses a required fact, when it recommends care, or
when it contains anything that looks like identifying information. The same identifying-information check
guards the report index that export writes (``check_identifying_information``).
"""

from __future__ import annotations

import re

from acula.training.data.records import Recording
from acula.training.reports.facts import FactSheet, fact_sheet
from acula.training.reports.vocabulary import ages, closure, mentions

# Reason codes (stable: tests, logs and the build summary use them).
KIND_REASONS = {
    "finding": "unsupported_finding",
    "diagnosis": "unsupported_diagnosis",
    "history": "unsupported_history",
    "symptom": "unsupported_symptom",
    "status": "unsupported_status",
    "quality": "unsupported_quality",
    "sex": "wrong_sex",
    "age_group": "wrong_age_group",
    "side": "wrong_side",
    "region": "wrong_site",
    "position": "wrong_position",
    "severity": "unsupported_severity",
}
CONTRADICTED = "contradicted_finding"
WRONG_AGE = "wrong_age"
UNSUPPORTED_AGE = "unsupported_age"
MISSING = "missing_required_fact"
CARE = "care_recommendation"
EMPTY = "empty_report"

CARE_PATTERN = re.compile(
    r"\b(?:recommend\w*|advis\w*|suggest(?:ed|s)? (?:that|an?|further)|should (?:be|undergo|receive|see|"
    r"consider|have|start|seek)|refer(?:ral|red)?\b|follow[- ]?up|consult\w*|prescri\w*|"
    r"treat(?:ment|ed)? with|therap(?:y|ies)\b|antibiotic\w*|bronchodilator\w*|inhaler\w*|echocardiogra\w*|"
    r"further (?:evaluation|investigation|testing|work-?up)|is warranted|admi(?:t|ssion)\b|"
    r"surgery|surgical|medication|consider\w*|please\b|repeat(?:ed)? (?:the )?(?:recording|auscultation|"
    r"examination|assessment|test)|x-?rays?\b|radiograph\w*|imaging|ultrasound|\bCT\b|monitor(?:ing|ed)?\b|"
    r"needs? (?:to|further|an?)\b|must (?:be|undergo|receive|see|have))",
    re.IGNORECASE,
)

# --- identifying information --------------------------------------------------------------------------
MONTHS = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
IDENTIFYING: list[tuple[str, re.Pattern[str]]] = [
    ("identifying_contact", re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|https?://|\bwww\.", re.IGNORECASE)),
    ("identifying_contact", re.compile(r"(?<![\w.])\+?\(?\d{2,4}\)?[\s.-]\d{3,4}[\s.-]\d{3,4}\b")),
    ("identifying_date", re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b")),
    ("identifying_date", re.compile(rf"\b{MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b")),
    ("identifying_date", re.compile(rf"\b\d{{1,2}}\s+{MONTHS}\s+\d{{4}}\b")),
    (
        "identifying_id",
        re.compile(
            r"\b(?:patient|subject|participant|record(?:ing)?|case|file|mrn|id|identifier)\s*(?:number|no\.?|#|id)?"
            r"\s*[:#]?\s*(?![\d.]+[\s-]*(?:years?|yrs?|months?|weeks?|days?)\b)[A-Za-z]*\d[\w-]*",
            re.IGNORECASE,
        ),
    ),
    ("identifying_id", re.compile(r"\b(?=\w*\d)(?=\w*[A-Za-z])\w{8,}\b")),
    ("identifying_digits", re.compile(r"\d{5,}")),
    ("identifying_name", re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam)\.?\s+[A-Z][a-z]+")),
    ("identifying_name", re.compile(r"\b(?:named|called|name is|name:)\s+[A-Z][a-z]+", re.IGNORECASE)),
]
# Capitalised words that may follow one another in a report without being a person's name.
PROPER_ALLOWED = {
    "Littmann",
    "Classic",
    "WelchAllyn",
    "Meditron",
    "Yunting",
    "Impression",
    "Site",
    "Patient",
    "Heart",
    "Lung",
    "Breath",
    "Sounds",
    "Findings",
    "Diagnosis",
    "Assessment",
    "History",
    "Participant",
    "Subject",
    "Clinical",
    "Cardiac",
    "Chest",
    "Outcome",
    "Recorded",
    "Known",
    "Annotated",
    "Reported",
    "Respiratory",
    "Examined",
    "Auscultation",
    "Paediatric",
    "Pediatric",
    "Simulated",
    "Manikin",
    "The",
    "A",
    "An",
    "No",
}
CAPITALISED_PAIR = re.compile(r"\b([A-Z][a-z]+)\s+([A-Z][a-z]+)\b")


def check_identifying_information(text: str) -> list[str]:
    """Reason codes (sorted, unique) for anything that looks like a name, date, id, contact, digit run."""
    reasons = {code for code, pattern in IDENTIFYING if pattern.search(text)}
    for match in CAPITALISED_PAIR.finditer(text):
        if match.group(1) in PROPER_ALLOWED or match.group(2) in PROPER_ALLOWED:
            continue
        # Clinical terms in title case ("Aortic Stenosis", "Fine Crackles") are not a person's name.
        if mentions(match.group(0).lower()):
            continue
        reasons.add("identifying_name")
    return sorted(reasons)


def _age_reasons(text: str, sheet: FactSheet) -> list[str]:
    out = []
    for years, tolerance, _ in ages(text):
        if sheet.age_years is None:
            out.append(UNSUPPORTED_AGE)
        elif abs(years - sheet.age_years) > tolerance:
            out.append(WRONG_AGE)
    return out


def validate_text(text: str, sheet: FactSheet) -> list[str]:
    """Reason codes (sorted, unique) for ``text`` against ``sheet``; empty when the report is acceptable."""
    if not text.strip():
        return [EMPTY]
    reasons: list[str] = []
    stated: set[str] = set()
    for mention in mentions(text):
        if mention.negated:
            if mention.fact in sheet.present and mention.fact.startswith(("finding:", "diagnosis:")):
                reasons.append(CONTRADICTED)
            continue
        stated.add(mention.fact)
        if mention.fact not in sheet.present:
            kind = mention.fact.split(":", 1)[0]
            reasons.append(KIND_REASONS.get(kind, "unsupported_fact"))
    # A negated required "absent" fact ("no adventitious sounds") counts as stating it.
    negated = {m.fact for m in mentions(text) if m.negated}
    for fact in sheet.required:
        if (
            fact not in closure(stated)
            and fact not in stated
            and not (fact in sheet.absent and fact in negated)
        ):
            reasons.append(MISSING)
    reasons += _age_reasons(text, sheet)
    if CARE_PATTERN.search(text):
        reasons.append(CARE)
    reasons += check_identifying_information(text)
    return sorted(set(reasons))


def validate(text: str, record: Recording) -> list[str]:
    """Reason codes for a report written from ``record``'s metadata (see the module docstring)."""
    return validate_text(text, fact_sheet(record))
