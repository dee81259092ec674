"""The synthetic data generator: deterministic, obviously fake, and covering the identity cases."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st
from proxymage_dev.synthetic import PATIENTS, large_study, synthetic_studies

TODAY = dt.date(2026, 11, 28)


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_same_seed_same_uids(seed: int) -> None:
    first = [(s.study_instance_uid, s.date) for s in synthetic_studies(seed, today=TODAY)]
    second = [(s.study_instance_uid, s.date) for s in synthetic_studies(seed, today=TODAY)]
    assert first == second
    assert len({uid for uid, _ in first}) == len(first)


def test_studies_have_several_series_modalities_and_ten_years_of_dates() -> None:
    studies = list(synthetic_studies(42, today=TODAY))
    assert len(studies) == sum(patient.studies for patient in PATIENTS)
    assert any(study.series_count > 1 for study in studies)
    assert len({m for study in studies for m in study.modalities}) >= 5
    assert all(TODAY - dt.timedelta(days=3650) <= study.date <= TODAY for study in studies)
    for study in studies:
        sops = [ds.SOPInstanceUID for ds in study.instances]
        assert len(set(sops)) == len(sops)
        assert {ds.StudyInstanceUID for ds in study.instances} == {study.study_instance_uid}


def test_identity_cases_are_covered() -> None:
    by_key = {patient.key: patient for patient in PATIENTS}
    assert by_key["beranger_tours"].patient_name == by_key["beranger_blois"].patient_name
    assert by_key["beranger_tours"].issuer != by_key["beranger_blois"].issuer
    assert by_key["lefaux_married"].birth_name is not None
    assert by_key["twin_paul"].birth_date == by_key["twin_pierre"].birth_date
    assert by_key["homonym_1950"].patient_name == by_key["homonym_1972"].patient_name
    assert {patient.character_set for patient in PATIENTS} == {"ISO_IR 100", "ISO_IR 192"}
    assert all(
        any(word in patient.patient_name for word in ("FICTI", "EXEMPLE", "ESSAI", "HOMONYME", "JUMEAU", "FICTION"))
        for patient in PATIENTS
    )


def test_large_study_has_the_requested_number_of_slices() -> None:
    study = large_study(42, 5)
    assert len(study.instances) == 5
    assert study.instances[0].Rows == 512
