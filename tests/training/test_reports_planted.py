"""Planted errors across every dataset family: the validator must catch each one added to a real template
report (which itself passes), and must not flag the same report without it.

The sweep plants one error per report of a sample of real recordings, so a validator that only knows the
few phrasings of the single-case tests in ``test_reports_validator.py`` fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from acula.training.data import load_records
from acula.training.data.records import Recording
from acula.training.reports.facts import fact_sheet
from acula.training.reports.template import TemplateWriter
from acula.training.reports.validator import CARE, validate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def records(shared_data: Path) -> list[Recording]:
    return load_records(shared_data)


def _sample(records: list[Recording], dataset: str, n: int = 40) -> list[Recording]:
    chosen = [r for r in records if r.dataset == dataset]
    assert chosen, dataset
    return chosen[:: max(1, len(chosen) // n)]


ADVICE = [
    "Consider a chest X-ray.",
    "Please repeat the recording.",
    "Needs further work-up.",
    "Monitoring is suggested.",
    "Recommend echocardiography.",
    "Refer to a paediatric pulmonologist.",
]


@pytest.mark.parametrize("advice", ADVICE)
def test_every_kind_of_care_advice_is_caught_everywhere(records: list[Recording], advice: str) -> None:
    writer = TemplateWriter(7)
    for dataset in ("sprsound", "physionet2016", "bmd_hs", "coswara", "hls_cmds", "icbhi2017", "circor2022"):
        for record in _sample(records, dataset, 10):
            text = writer.write(record).text
            assert validate(text, record) == [], (record.recording_id, text)
            assert CARE in validate(f"{text} {advice}", record), (record.recording_id, advice)


def test_added_finding_is_caught_unless_the_metadata_has_it(records: list[Recording]) -> None:
    writer = TemplateWriter(1)
    planted = {"finding:wheeze": "Expiratory wheezes are heard.", "finding:murmur": "A soft murmur is heard."}
    caught = 0
    for dataset in ("sprsound", "physionet2016", "bmd_hs", "icbhi2017", "hls_cmds"):
        for record in _sample(records, dataset):
            present = fact_sheet(record).present
            text = writer.write(record).text
            for fact, sentence in planted.items():
                reasons = validate(f"{text} {sentence}", record)
                if fact in present:
                    assert "unsupported_finding" not in reasons, (record.recording_id, sentence)
                else:
                    assert "unsupported_finding" in reasons, (record.recording_id, sentence)
                    caught += 1
    assert caught > 300  # most recordings support neither finding: the sweep really planted errors


def test_swapped_side_and_shifted_age_are_caught(records: list[Recording]) -> None:
    writer = TemplateWriter(2)
    swapped = aged = 0
    for dataset in ("sprsound", "icbhi2017", "bmd_hs"):
        for record in _sample(records, dataset):
            text = writer.write(record).text
            for old, new in ((" left ", " right "), (" right ", " left ")):
                if old in text:
                    assert "wrong_side" in validate(text.replace(old, new), record), text
                    swapped += 1
                    break
            age = record.labels.get("age_years")
            if isinstance(age, float) and age >= 1 and f"{age:g}-year-old" in text:
                wrong = f"{age + 7:g}-year-old"
                assert "wrong_age" in validate(text.replace(f"{age:g}-year-old", wrong), record), text
                aged += 1
    assert swapped > 40 and aged > 40


def test_names_dates_and_ids_are_caught_in_any_report(records: list[Recording]) -> None:
    writer = TemplateWriter(3)
    planted = {
        "Examined by Dr Chen.": "identifying_name",
        "Seen on 12/03/2021.": "identifying_date",
        "Hospital number 4471920.": "identifying_digits",
        f"Recording {records[0].recording_id}.": "identifying_id",
    }
    for dataset in ("sprsound", "coswara", "circor2022"):
        for record in _sample(records, dataset, 10):
            text = writer.write(record).text
            for sentence, reason in planted.items():
                assert reason in validate(f"{text} {sentence}", record), (sentence, text)


def test_title_case_clinical_terms_are_not_names() -> None:
    """An LLM may capitalise terms ("Aortic Stenosis"); that must not be rejected as a person's name."""
    from acula.training.reports.validator import check_identifying_information

    for text in ("Impression: Aortic Stenosis.", "Findings: Fine Crackles, Left Posterior Chest."):
        assert check_identifying_information(text) == [], text
    for text in ("Examined by John Smith.", "Maria Lopez, Mitral Area."):
        assert check_identifying_information(text) == ["identifying_name"], text
