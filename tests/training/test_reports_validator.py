"""The validator: every template report for every real recording passes; planted errors are caught with
their stable reason codes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from acula.training.data import load_records
from acula.training.data.records import Recording
from acula.training.reports.template import TemplateWriter
from acula.training.reports.validator import check_identifying_information, validate


@pytest.fixture(scope="module")
def records(shared_data: Path) -> list[Recording]:
    return load_records(shared_data)


def _find(records: list[Recording], dataset: str, **labels: object) -> Recording:
    return next(
        r for r in records if r.dataset == dataset and all(r.labels.get(k) == v for k, v in labels.items())
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_every_template_report_passes(records: list[Recording], seed: int) -> None:
    writer = TemplateWriter(seed)
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for record in records:
        text = writer.write(record).text
        for reason in validate(text, record):
            failures[f"{record.dataset}:{reason}"] += 1
            examples.setdefault(f"{record.dataset}:{reason}", text)
    assert len(records) == 8577  # every recording of the shared data (Coswara: 22 silent files skipped)
    assert not failures, (failures, examples)


def test_added_wheeze_is_caught(records: list[Recording]) -> None:
    record = _find(records, "sprsound", record_label="Normal")
    text = TemplateWriter().write(record).text
    assert validate(text, record) == []
    assert "unsupported_finding" in validate(text + " Scattered expiratory wheezes are heard.", record)
    # a negated mention is not a claim ...
    assert validate(text + " There is no wheeze.", record) == []


def test_denying_an_annotated_finding_is_caught(records: list[Recording]) -> None:
    record = next(r for r in records if r.dataset == "sprsound" and "Wheeze" in r.labels["events"])  # type: ignore[operator]
    text = TemplateWriter().write(record).text
    assert validate(text, record) == []
    assert "contradicted_finding" in validate(text + " No wheezes are heard.", record)


def test_changed_side_is_caught(records: list[Recording]) -> None:
    record = next(r for r in records if r.dataset == "sprsound" and r.site == "left posterior chest")
    text = TemplateWriter().write(record).text
    assert "wrong_side" in validate(text.replace("left posterior", "right posterior"), record)
    assert "wrong_site" in validate(text.replace("left posterior", "left lateral"), record)


def test_wrong_age_and_sex_are_caught(records: list[Recording]) -> None:
    record = _find(records, "bmd_hs", age_years=35.0, sex="male")
    text = TemplateWriter().write(record).text
    assert "35-year-old" in text
    assert "wrong_age" in validate(text.replace("35-year-old", "53-year-old"), record)
    assert "wrong_sex" in validate(text.replace(" man", " woman"), record)
    physionet = _find(records, "physionet2016", abnormal=False)
    sparse = "Phonocardiogram of a patient aged 40. Classified as normal."
    assert validate(sparse, physionet) == ["unsupported_age"]


def test_recommendation_is_caught(records: list[Recording]) -> None:
    record = _find(records, "bmd_hs", AS=True)
    text = TemplateWriter().write(record).text
    advice_list = [
        "Recommend echocardiography.",
        "Referral to cardiology.",
        "The patient should be seen again.",
        "Follow-up in 3 months is advised.",
    ]
    for advice in advice_list:
        assert "care_recommendation" in validate(f"{text} {advice}", record), advice


def test_identifying_information_is_caught(records: list[Recording]) -> None:
    record = _find(records, "icbhi2017", diagnosis="COPD")
    text = TemplateWriter().write(record).text
    assert "identifying_name" in validate(
        f"{text} The patient, John Smith, tolerated the examination.", record
    )
    assert "identifying_name" in validate(f"Mrs. Patel was examined. {text}", record)
    assert check_identifying_information("Recorded on 2020-04-13.") == ["identifying_date"]
    assert check_identifying_information("Seen on March 3, 2021.") == ["identifying_date"]
    assert "identifying_id" in check_identifying_information("Patient ID 65101170 was examined.")
    assert "identifying_digits" in check_identifying_information("Ref 12345678.")
    assert "identifying_contact" in check_identifying_information("Contact jane.doe@example.org.")
    assert "identifying_contact" in check_identifying_information("Call +44 20 7946 0958 for results.")
    assert "identifying_id" in check_identifying_information(
        "Participant 0Rlzhiz6bybk77wdLjxwy7yLDhg1 coughed."
    )
    assert check_identifying_information(text) == []
    assert check_identifying_information("A 4.9-year-old girl. Patient: 8-month-old infant.") == []


def test_unsupported_diagnosis_severity_and_missing_fact(records: list[Recording]) -> None:
    record = _find(records, "physionet2016", abnormal=True)
    text = TemplateWriter().write(record).text
    assert validate(text, record) == []
    assert "unsupported_diagnosis" in validate(text + " Findings suggest mitral stenosis.", record)
    assert "unsupported_severity" in validate(text + " A grade III/VI murmur.", record)
    assert "missing_required_fact" in validate("Phonocardiogram. No further clinical details.", record)
    assert "unsupported_status" in validate("Phonocardiogram. Classified as normal.", record)
    assert validate("", record) == ["empty_report"]


def test_circor_grade_must_match(records: list[Recording]) -> None:
    record = _find(records, "circor2022", murmur="Present", systolic_grading="I/VI")
    text = TemplateWriter().write(record).text
    assert "grade I/VI" in text and validate(text, record) == []
    assert "unsupported_severity" in validate(text.replace("grade I/VI", "grade III/VI"), record)
