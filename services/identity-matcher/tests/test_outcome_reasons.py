"""The reasons an outcome carries (matching.py, handlers.py): a stable code and a French text, no patient data."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from identity_matcher.handlers import french_time
from identity_matcher.matching import dcc_side_problem, resolve
from identity_matcher.rules import DccIdentity
from proxymage_shared import reasons
from proxymage_shared.dicom.results import PatientRecord, parse_da


def identity(birth_name: str = "ESSAI-FICTIF", first_name: str = "Marie", sex: str = "F") -> DccIdentity:
    return DccIdentity(birth_name, None, first_name, dt.date(1956, 4, 12), sex)


def record(patient_name: str, birth_date: str = "19560412") -> PatientRecord:
    return PatientRecord(
        patient_id="FICTIF-0001",
        issuer="CHU-FICTIF",
        patient_name=patient_name,
        birth_name=None,
        birth_date_raw=birth_date,
        birth_date=parse_da(birth_date),
        sex="F",
        character_sets=(),
    )


def test_a_usable_dcc_identity_has_no_problem() -> None:
    assert dcc_side_problem(identity()) is None


def test_an_unknown_sex_and_an_invalid_name_are_invalid_identity_in_french_without_values() -> None:
    problem = dcc_side_problem(identity(birth_name="ESSAI#FICTIF", sex="U"))
    assert problem is not None
    assert problem.code == "invalid_identity"
    assert problem.text == (
        f"{reasons.TEXTS['invalid_identity']} (nom de naissance vide ou avec des caractères non admis dans un nom"
        " ; sexe inconnu, M ou F requis)"
    )
    assert "ESSAI" not in problem.text


def test_unmatched_is_patient_not_found_and_near_misses_stay_structured() -> None:
    outcome = resolve(identity(first_name="Marie Claire"), [record("ESSAI-FICTIF^MARIE-CLAIRE")])
    assert outcome.status == "unmatched"
    assert outcome.reason == reasons.Reason.of("patient_not_found")
    assert [(n.trait, n.kind) for n in outcome.near_misses] == [("first_name", "separator")]


def test_matched_has_no_reason() -> None:
    outcome = resolve(identity(), [record("ESSAI-FICTIF^MARIE")])
    assert outcome.status == "matched"
    assert outcome.reason is None


def test_times_in_reasons_are_french_and_local() -> None:
    paris = ZoneInfo("Europe/Paris")
    assert (
        french_time(dt.datetime(2026, 3, 5, 13, 2, 7, tzinfo=dt.UTC), paris) == "05/03/2026 à 14:02:07 (heure de Paris)"
    )
    # Summer time: UTC+2.
    assert (
        french_time(dt.datetime(2026, 7, 1, 8, 0, 0, tzinfo=dt.UTC), paris) == "01/07/2026 à 10:00:00 (heure de Paris)"
    )
    assert french_time(dt.datetime(2026, 7, 1, 8, 0, 0, tzinfo=dt.UTC), ZoneInfo("America/Cayenne")).endswith(
        "05:00:00 (heure de Cayenne)"
    )
