"""The DICOM client against the real Orthanc instances: C-ECHO, patient- and study-level C-FIND on MIRC,
C-MOVE of a seeded study MIRC -> VIEWER with the instance count checked on VIEWER, and failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from proxymage_dev.pytest_plugin import delete_from_orthanc
from proxymage_dev.synthetic import PATIENTS, SyntheticStudy
from proxymage_shared.dicom import (
    DicomClient,
    DicomTimeouts,
    DicomUnavailableError,
    MoveProgress,
    patient_query,
    study_query,
)
from proxymage_shared.dicom.budget import AssociationBudget, AssociationBudgetBusyError, BudgetOptions, MemorySlots
from proxymage_shared.errors import ProxymageError
from proxymage_shared.settings import DicomPeer
from pynetdicom.association import Association


def requests_count(peer: str, operation: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "proxymage_dicom_requests_total", {"peer": peer, "operation": operation, "outcome": outcome}
    )
    return value or 0.0


@pytest.fixture
def mirc_client(mirc: DicomPeer) -> DicomClient:
    return DicomClient("PM_DEV", mirc, max_associations=2)


async def test_echo_both_instances(mirc: DicomPeer, viewer: DicomPeer) -> None:
    for peer in (mirc, viewer):
        client = DicomClient("PM_DEV", peer)
        await client.echo()
        client.close()


async def test_patient_level_find_decodes_accents_and_issuers(
    mirc_client: DicomClient, seeded_studies: list[SyntheticStudy]
) -> None:
    before = requests_count("MIRC", "C-FIND", "ok")
    found = await mirc_client.find_patients(patient_query(birth_date=dt.date(1956, 4, 12)))
    assert requests_count("MIRC", "C-FIND", "ok") == before + 1
    by_id = {record.patient_id: record for record in found}
    assert set(by_id) == {"T0001", "B0042"}  # the same person under two issuers
    assert by_id["T0001"].patient_name == "BÉRANGER-FICTIF^Hélène"
    assert by_id["B0042"].patient_name == "BÉRANGER-FICTIF^Hélène"
    assert by_id["T0001"].issuer == "CHU-FICTIF-TOURS"
    assert by_id["B0042"].issuer == "CH-FICTIF-BLOIS"
    assert by_id["T0001"].birth_date == dt.date(1956, 4, 12)
    assert by_id["T0001"].sex == "F"

    married = await mirc_client.find_patients(patient_query(birth_date=dt.date(1961, 9, 30)))
    assert [(r.patient_name, r.birth_name) for r in married] == [
        ("LEFAUX-EXEMPLE^Marie-Claire", "D'EXEMPLE^Marie-Claire")
    ]

    ligature = await mirc_client.find_patients(patient_query(birth_date=dt.date(1990, 7, 14)))
    assert [r.patient_name for r in ligature] == ["SŒUR-EXEMPLE^Anaïs"]
    mirc_client.close()


async def test_study_level_find_lists_the_seeded_studies(
    mirc_client: DicomClient, seeded_studies: list[SyntheticStudy]
) -> None:
    expected = {s.study_instance_uid: s for s in seeded_studies if s.patient.patient_id == "T0001"}
    found = await mirc_client.find_studies(study_query(patient_id="T0001", issuer="CHU-FICTIF-TOURS"))
    assert {record.study_instance_uid for record in found} == set(expected)
    for record in found:
        study = expected[record.study_instance_uid]
        assert record.instances == len(study.instances)
        assert record.series == study.series_count
        assert record.date == study.date
        assert set(record.modalities) == set(study.modalities)
        assert record.description == study.description
    mirc_client.close()


async def test_move_a_study_to_the_viewer_and_count_its_instances_there(
    mirc_client: DicomClient, viewer: DicomPeer, seeded_studies: list[SyntheticStudy], stack_env: dict[str, str]
) -> None:
    study = max(seeded_studies, key=lambda s: len(s.instances))
    delete_from_orthanc(stack_env, "VIEWER", study.study_instance_uid)
    progress: list[MoveProgress] = []
    started_after: list[int] = []  # how many pending responses had come when the move was told started

    async def started() -> None:
        started_after.append(len(progress))

    result = await mirc_client.move_study(
        study.study_instance_uid, viewer.ae_title, progress.append, on_started=started
    )
    assert started_after == [0]
    assert result.complete
    assert result.completed == len(study.instances)
    assert result.failed == 0
    assert progress, "pending responses report sub-operation progress"
    assert all(p.total == len(study.instances) for p in progress)

    viewer_client = DicomClient("PM_FETCHER", viewer)
    on_viewer = await viewer_client.find_studies(study_query(study_instance_uid=study.study_instance_uid))
    assert [record.instances for record in on_viewer] == [len(study.instances)]
    viewer_client.close()
    mirc_client.close()


async def test_move_to_an_unknown_destination_fails_and_moves_nothing(
    mirc_client: DicomClient, viewer: DicomPeer, seeded_studies: list[SyntheticStudy], stack_env: dict[str, str]
) -> None:
    # Orthanc answers 0xC000 here (not the standard's 0xA801), so the failure is classified transient.
    study = next(s for s in seeded_studies if s.patient.key == PATIENTS[-1].key)
    delete_from_orthanc(stack_env, "VIEWER", study.study_instance_uid)
    with pytest.raises(ProxymageError):
        await mirc_client.move_study(study.study_instance_uid, "NOWHERE")
    viewer_client = DicomClient("PM_FETCHER", viewer)
    assert await viewer_client.find_studies(study_query(study_instance_uid=study.study_instance_uid)) == []
    viewer_client.close()
    mirc_client.close()


async def test_unreachable_peer_is_a_transient_error(stack_env: dict[str, str]) -> None:
    nobody = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=1)
    client = DicomClient("PM_DEV", nobody, timeouts=DicomTimeouts(connection=1, acse=1, dimse=2, network=2))
    before = requests_count("MIRC", "C-FIND", "transient")
    with pytest.raises(DicomUnavailableError):
        await client.find_patients(patient_query(birth_date=dt.date(1956, 4, 12)))
    assert requests_count("MIRC", "C-FIND", "transient") == before + 1
    client.close()


async def test_unknown_calling_ae_is_refused(mirc: DicomPeer) -> None:
    client = DicomClient("INTRUDER", mirc)
    with pytest.raises(DicomUnavailableError, match="rejected"):
        await client.echo()
    client.close()


@pytest.fixture
def held_release(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Association releases wait for the test: (`releasing`, set when one starts; `go_on`, set to let it end)."""
    releasing, go_on = threading.Event(), threading.Event()
    release = Association.release

    def slow_release(assoc: Association) -> None:
        releasing.set()
        go_on.wait(10)
        release(assoc)

    monkeypatch.setattr(Association, "release", slow_release)
    yield releasing, go_on
    go_on.set()


async def test_an_answer_is_returned_before_its_association_is_released_and_the_cap_holds_until_then(
    viewer: DicomPeer, held_release: tuple[threading.Event, threading.Event]
) -> None:
    releasing, go_on = held_release
    client = DicomClient("PM_DEV", viewer, max_associations=1)
    try:
        await asyncio.wait_for(client.echo(), 5)  # answered while its release waits
        assert await asyncio.to_thread(releasing.wait, 5)
        # The only association slot is still held by that release: a second request waits for it.
        second = asyncio.ensure_future(client.echo())
        await asyncio.sleep(0.3)
        assert not second.done()
        go_on.set()
        await asyncio.wait_for(second, 5)
    finally:
        go_on.set()
        await asyncio.to_thread(client.close)


async def test_with_a_budget_the_answer_comes_first_and_the_slot_is_given_back_once_released(
    viewer: DicomPeer, held_release: tuple[threading.Event, threading.Event]
) -> None:
    """The caller does not wait for the release (a round trip), but the budget's slot stays held until the
    association is over: the peer never sees more associations than the budget allows."""
    releasing, go_on = held_release
    slots = MemorySlots()
    budget = AssociationBudget(slots, process="test", options=BudgetOptions(wait_seconds=0.3))
    client = DicomClient("PM_DEV", viewer.model_copy(update={"max_associations": 1}), budget=budget)
    try:
        await asyncio.wait_for(client.echo(), 5)
        assert await asyncio.to_thread(releasing.wait, 5)
        assert slots.held(dt.datetime.now(dt.UTC)) == ["VIEWER#0"]
        with pytest.raises(AssociationBudgetBusyError):  # the only slot is still the releasing association's
            await client.find_studies(study_query(study_instance_uid="1.2.3"))  # waits the budget's 0.3 s
        go_on.set()
        await asyncio.wait_for(client.drain(), 5)
        assert slots.held(dt.datetime.now(dt.UTC)) == []
        await asyncio.wait_for(client.echo(), 5)
    finally:
        go_on.set()
        await client.aclose()
