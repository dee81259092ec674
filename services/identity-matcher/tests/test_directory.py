"""Query planning and narrowing, with a scripted stand-in for MIRC (pure logic; the real PACS is exercised
in test_service_integration.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from identity_matcher.directory import AnswerTooLargeError, MircDirectory
from identity_matcher.query_plan import initial_patterns, query_plan, vigilance_queries
from proxymage_shared.dicom import DicomTransientError, DicomUnavailableError, PatientRecord
from pydicom.dataset import Dataset

BIRTH = dt.date(1956, 4, 12)


def record(patient_id: str) -> PatientRecord:
    return PatientRecord(patient_id, "ISSUER", "FICTIF^Zoé", None, "19560412", BIRTH, "F", ())


class ScriptedMirc:
    """Answers by the query's keys; records every identifier it was sent."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.queries: list[tuple[str, str, str]] = []

    async def find_patients(self, identifier: Dataset) -> list[PatientRecord]:
        keys = (str(identifier.PatientBirthDate), str(identifier.PatientSex), str(identifier.PatientName))
        self.queries.append(keys)
        result = self.answer(keys) if callable(self.answer) else self.answer
        if isinstance(result, Exception):
            raise result
        return list(result)


def test_plan_goes_from_birth_date_to_sex_to_initials_with_accents() -> None:
    plan = query_plan(BIRTH, "F", ["EXEMPLE", "OEUVRE"])
    assert [level.name for level in plan] == ["birth_date", "birth_date+sex", "birth_date+sex+initial"]
    assert plan[0].queries[0].sex is None
    assert plan[1].queries[0].sex == "F"
    patterns = [keys.name_pattern for keys in plan[2].queries]
    assert patterns[:5] == ["E*", "È*", "É*", "Ê*", "Ë*"]
    assert "Œ*" in patterns
    assert initial_patterns(["ZOE", "ZAZIE"]) == ("Z*",)


def test_vigilance_looks_for_a_swapped_day_and_month_only_when_it_is_a_date() -> None:
    assert [keys.birth_date for keys in vigilance_queries(BIRTH, "F")] == [dt.date(1956, 12, 4)]
    assert vigilance_queries(dt.date(1956, 4, 13), "F") == ()  # 13 is no month
    assert vigilance_queries(dt.date(1956, 4, 4), "F") == ()  # the same date


async def test_a_small_answer_is_used_as_is() -> None:
    mirc = ScriptedMirc([record("A"), record("B")])
    found = await MircDirectory(mirc, max_answers=10).find(query_plan(BIRTH, "F", ["FICTIF"]))
    assert [r.patient_id for r in found.records] == ["A", "B"]
    assert found.level == "birth_date"
    assert len(mirc.queries) == 1


async def test_a_capped_answer_is_narrowed_by_sex_then_initials() -> None:
    def answer(keys: tuple[str, str, str]) -> list[PatientRecord]:
        _, _, name = keys
        if not name:
            return [record(f"X{i}") for i in range(5)]  # capped (max 5) with or without sex
        return [record(f"{name[0]}1")]

    mirc = ScriptedMirc(answer)
    found = await MircDirectory(mirc, max_answers=5).find(query_plan(BIRTH, "F", ["FICTIF"]))
    assert found.level == "birth_date+sex+initial"
    assert [r.patient_id for r in found.records] == ["F1"]
    assert [q[1] for q in mirc.queries] == ["", "F", "F"]


async def test_a_refusal_as_too_large_is_narrowed_but_other_failures_are_not() -> None:
    def refuse_broad(keys: tuple[str, str, str]) -> object:
        return DicomTransientError("out of resources", status=0xA700) if not keys[1] else [record("N")]

    found = await MircDirectory(ScriptedMirc(refuse_broad), 100).find(query_plan(BIRTH, "F", ["FICTIF"]))
    assert found.level == "birth_date+sex"

    busy = ScriptedMirc(DicomTransientError("unable to process", status=0xC001))
    with pytest.raises(DicomTransientError):
        await MircDirectory(busy, 100).find(query_plan(BIRTH, "F", ["FICTIF"]))
    assert len(busy.queries) == 1

    down = ScriptedMirc(DicomUnavailableError("no association"))
    with pytest.raises(DicomUnavailableError):
        await MircDirectory(down, 100).find(query_plan(BIRTH, "F", ["FICTIF"]))


async def test_capped_at_every_level_is_an_error() -> None:
    mirc = ScriptedMirc([record(f"X{i}") for i in range(3)])
    with pytest.raises(AnswerTooLargeError):
        await MircDirectory(mirc, max_answers=3).find(query_plan(BIRTH, "F", ["FICTIF"]))


async def test_vigilance_answers_are_added_to_the_candidates() -> None:
    def answer(keys: tuple[str, str, str]) -> list[PatientRecord]:
        return [record("SWAPPED")] if keys[0] == "19561204" else [record("MAIN")]

    plan = query_plan(BIRTH, "F", ["FICTIF"])
    found = await MircDirectory(ScriptedMirc(answer), 10).find(plan, vigilance_queries(BIRTH, "F"))
    assert sorted(r.patient_id for r in found.records) == ["MAIN", "SWAPPED"]
