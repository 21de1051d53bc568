"""Clinical vocabulary: text patterns -> normalised facts, shared by the validator and the writers.

A fact is ``kind:value`` (``finding:wheeze``, ``diagnosis:copd``, ``side:left``, ``sex:female``...). The
validator extracts facts from report text with these patterns and compares them with what the metadata
supports; :data:`PARENTS` says which general terms a specific finding also supports ("fine crackles" supports
saying "crackles" or "adventitious sounds", never the reverse).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (pattern, fact), matched case-insensitively; ``(?-i:...)`` marks abbreviations that must be upper case.
PATTERNS: list[tuple[str, str]] = [
    # lung findings
    (r"\bwheez\w*", "finding:wheeze"),
    (r"\brhonch\w*", "finding:rhonchi"),
    (r"\bstridor\w*", "finding:stridor"),
    (r"\bfine crackl\w*", "finding:fine crackle"),
    (r"\bcoarse crackl\w*", "finding:coarse crackle"),
    (r"\bcrackl\w*|\brales?\b|\bcrepitation\w*", "finding:crackle"),
    (r"\bpleural (?:friction )?rubs?\b|\bfriction rubs?\b", "finding:pleural rub"),
    (r"\bcontinuous adventitious", "finding:continuous adventitious sound"),
    (r"\bdiscontinuous adventitious", "finding:discontinuous adventitious sound"),
    (r"\badventitious", "finding:adventitious sound"),
    # heart findings
    (r"\bmurmurs?\b", "finding:murmur"),
    (r"\bearly[- ]systolic", "finding:early systolic murmur"),
    (r"\bmid[- ]systolic", "finding:mid systolic murmur"),
    (r"\blate[- ]systolic", "finding:late systolic murmur"),
    (r"\bholosystolic|\bpansystolic", "finding:holosystolic murmur"),
    (r"\bsystolic\b", "finding:systolic murmur"),
    (r"\bearly[- ]diastolic", "finding:early diastolic murmur"),
    (r"\bmid[- ]diastolic", "finding:mid diastolic murmur"),
    (r"\blate[- ]diastolic", "finding:late diastolic murmur"),
    (r"\bholodiastolic", "finding:holodiastolic murmur"),
    (r"\bdiastolic\b", "finding:diastolic murmur"),
    (r"(?-i:\bS3\b)|\bthird heart sound", "finding:s3"),
    (r"(?-i:\bS4\b)|\bfourth heart sound", "finding:s4"),
    (r"\bgallop", "finding:gallop"),
    (r"\batrial fibrillation|(?-i:\bAF\b)", "finding:atrial fibrillation"),
    (r"\b(?:AV|atrioventricular|heart) block", "finding:av block"),
    (r"\btachycardi\w*", "finding:tachycardia"),
    (r"\bbradycardi\w*", "finding:bradycardia"),
    (r"\bclick\w*|\bsnap\w*|\bejection sound", "finding:click"),
    # diagnoses
    (r"\bCOPD\b|\bchronic obstructive", "diagnosis:copd"),
    (r"\basthma\w*", "diagnosis:asthma"),
    (r"\bpneumonia\b", "diagnosis:pneumonia"),
    (r"\bbronchiectasis", "diagnosis:bronchiectasis"),
    (r"\bbronchiolitis", "diagnosis:bronchiolitis"),
    (r"\bbronchitis", "diagnosis:bronchitis"),
    (r"(?-i:\bURTI\b)|\bupper respiratory (?:tract )?infection", "diagnosis:urti"),
    (r"(?-i:\bLRTI\b)|\blower respiratory (?:tract )?infection", "diagnosis:lrti"),
    (r"\baortic (?:valve )?stenosis", "diagnosis:aortic stenosis"),
    (r"\baortic (?:valve )?(?:regurgitation|insufficiency)", "diagnosis:aortic regurgitation"),
    (r"\bmitral (?:valve )?(?:regurgitation|insufficiency)", "diagnosis:mitral regurgitation"),
    (r"\bmitral (?:valve )?stenosis", "diagnosis:mitral stenosis"),
    (r"\bvalvular|\bvalve disease", "diagnosis:valvular disease"),
    (r"\bcovid\w*|\bsars-cov-2|\bcoronavirus", "diagnosis:covid-19"),
    (r"\brespiratory (?:illness|symptoms)", "diagnosis:respiratory illness"),
    (r"\bhypertensi\w*", "diagnosis:hypertension"),
    (r"\bdiabet\w*", "diagnosis:diabetes"),
    (r"\bheart failure|\bcardiomyopath\w*", "diagnosis:heart failure"),
    (r"\bsmok\w*", "history:smoker"),
    (r"\bfever\w*|\bfebrile", "symptom:fever"),
    (r"\bexposed|\bexposure", "history:exposure"),
    # overall status and quality
    (r"\babnormal\w*", "status:abnormal"),
    (r"\bnormal\b|\bunremarkable", "status:normal"),
    (r"\bhealthy\b", "status:healthy"),
    (
        r"\bpoor (?:signal |recording |sound |audio )?quality|\blow[- ]quality|\buninterpretable",
        "quality:poor",
    ),
    # demographics
    (r"\b(?:male|man|boy|gentleman|he|his|him)\b", "sex:male"),
    (r"\b(?:female|woman|girl|lady|she|her|hers)\b", "sex:female"),
    (r"\bneonat\w*|\bnewborn", "age_group:neonate"),
    (r"\binfant\w*", "age_group:infant"),
    (r"\bchild\w*|\bpa?ediatric|\bboy\b|\bgirl\b", "age_group:child"),
    (r"\badolescen\w*|\bteen\w*", "age_group:adolescent"),
    (r"\badults?\b", "age_group:adult"),
    (r"\belderly|\bolder adult|\bgeriatric", "age_group:older adult"),
    # site
    (r"\bleft\b", "side:left"),
    (r"\bright\b", "side:right"),
    (r"\bposterior\w*", "region:posterior"),
    (r"\banterior\w*", "region:anterior"),
    (r"\blateral\w*", "region:lateral"),
    (r"\btrache\w*", "region:trachea"),
    (r"\bapex\b|\bapical", "region:apex"),
    (r"\baortic (?:area|region|valve area|focus|position)", "region:aortic area"),
    (r"\bmitral (?:area|region|valve area|focus|position)", "region:mitral area"),
    (r"\bpulmon(?:ic|ary) (?:area|region|valve area|focus|position)", "region:pulmonic area"),
    (r"\btricuspid (?:area|region|valve area|focus|position)", "region:tricuspid area"),
    (r"\bsternal border", "region:sternal border"),
    (r"\bsitting|\bseated|\bupright", "position:sitting"),
    (r"\bsupine|\blying", "position:supine"),
    # severity
    (r"\bmild\w*", "severity:mild"),
    (r"\bmoderate\w*", "severity:moderate"),
    (r"\bsevere\w*", "severity:severe"),
]
GRADE = re.compile(r"\b(VI|IV|V|I{1,3})/(VI|IV)\b|\bgrade\s+(\d)\s*(?:/|of|out of)\s*(\d)", re.IGNORECASE)
ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI"}

PARENTS: dict[str, tuple[str, ...]] = {
    "finding:wheeze": ("finding:continuous adventitious sound",),
    "finding:rhonchi": ("finding:continuous adventitious sound",),
    "finding:stridor": ("finding:continuous adventitious sound",),
    "finding:fine crackle": ("finding:crackle",),
    "finding:coarse crackle": ("finding:crackle",),
    "finding:crackle": ("finding:discontinuous adventitious sound",),
    "finding:continuous adventitious sound": ("finding:adventitious sound",),
    "finding:discontinuous adventitious sound": ("finding:adventitious sound",),
    "finding:pleural rub": ("finding:adventitious sound",),
    "finding:early systolic murmur": ("finding:systolic murmur",),
    "finding:mid systolic murmur": ("finding:systolic murmur",),
    "finding:late systolic murmur": ("finding:systolic murmur",),
    "finding:holosystolic murmur": ("finding:systolic murmur",),
    "finding:systolic murmur": ("finding:murmur",),
    "finding:early diastolic murmur": ("finding:diastolic murmur",),
    "finding:mid diastolic murmur": ("finding:diastolic murmur",),
    "finding:late diastolic murmur": ("finding:diastolic murmur",),
    "finding:holodiastolic murmur": ("finding:diastolic murmur",),
    "finding:diastolic murmur": ("finding:murmur",),
    "finding:s3": ("finding:gallop",),
    "finding:s4": ("finding:gallop",),
    "diagnosis:aortic stenosis": ("diagnosis:valvular disease",),
    "diagnosis:aortic regurgitation": ("diagnosis:valvular disease",),
    "diagnosis:mitral regurgitation": ("diagnosis:valvular disease",),
    "diagnosis:mitral stenosis": ("diagnosis:valvular disease",),
}

NEGATION = re.compile(
    r"\b(?:no|not|without|absent|absence of|negative for|free of|denies|nor|neither|rather than|ruled out)\b"
    r"(?:[\s,/-]+[\w'-]+){0,5}?[\s,/-]*$",
    re.IGNORECASE,
)
CLAUSE_BREAK = re.compile(r"[.;:!?]|\bbut\b|\bhowever\b|\bwhile\b|\bwith\b(?! no)", re.IGNORECASE)

_COMPILED = [(re.compile(pattern, re.IGNORECASE), fact) for pattern, fact in PATTERNS]


@dataclass(frozen=True)
class Mention:
    fact: str
    negated: bool
    start: int
    text: str


def closure(facts: set[str]) -> set[str]:
    """``facts`` with every more general term they support (see :data:`PARENTS`)."""
    out = set(facts)
    stack = list(facts)
    while stack:
        for parent in PARENTS.get(stack.pop(), ()):
            if parent not in out:
                out.add(parent)
                stack.append(parent)
    return out


def _negated(text: str, start: int) -> bool:
    """A negation word shortly before ``start`` in the same clause ("no wheeze", "without crackles")."""
    before = text[max(0, start - 60) : start]
    breaks = list(CLAUSE_BREAK.finditer(before))
    if breaks:
        before = before[breaks[-1].end() :]
    return NEGATION.search(before) is not None


def mentions(text: str) -> list[Mention]:
    """Every vocabulary mention in ``text``, with whether it is negated."""
    found = [
        Mention(fact, _negated(text, m.start()), m.start(), m.group(0))
        for pattern, fact in _COMPILED
        for m in pattern.finditer(text)
    ]
    for m in GRADE.finditer(text):
        if m.group(1):
            grade = f"{m.group(1).upper()}/{m.group(2).upper()}"
        else:
            grade = f"{ROMAN.get(m.group(3), m.group(3))}/{ROMAN.get(m.group(4), m.group(4))}"
        found.append(Mention(f"severity:grade {grade}", _negated(text, m.start()), m.start(), m.group(0)))
    return sorted(found, key=lambda m: m.start)


AGE = re.compile(
    r"\b(\d+(?:\.\d+)?)[\s-]*(years?|yrs?|y/o|yo|months?|mo|weeks?|days?)(?:[\s-]*old)?\b"
    r"|\baged?\s+(\d+(?:\.\d+)?)\b(?![\s-]*(?:years?|yrs?|months?|mo|weeks?|days?)\b)",
    re.IGNORECASE,
)
UNIT_YEARS = {"y": 1.0, "m": 1 / 12, "w": 7 / 365.25, "d": 1 / 365.25}


def ages(text: str) -> list[tuple[float, float, str]]:
    """(age in years, tolerance in years, matched text) for every stated age."""
    out = []
    for m in AGE.finditer(text):
        if m.group(3):
            out.append((float(m.group(3)), 0.051, m.group(0)))
            continue
        unit = m.group(2).lower()
        key = "m" if unit.startswith("mo") else unit[0]
        factor = UNIT_YEARS[key]
        out.append((float(m.group(1)) * factor, 0.051 if key == "y" else factor * 1.01 + 0.01, m.group(0)))
    return out
