"""CONTRACT v1.1 on the real stack: what the viewer store really holds, and what MIRC was asked, as the
enrolment's consent, identity and withdrawal change (the fetcher in-process; identity outcomes sent as the
identity-matcher publishes them), and the retention of what an enrolment leaves there."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

from prometheus_client import REGISTRY
from proxymage_dev.synthetic import SyntheticPatient, SyntheticStudy, large_study, synthetic_studies
from proxymage_dev.testing import eventually
from proxymage_shared.settings import DicomPeer
from study_fetcher.cleanup import ViewerCleaner
from study_fetcher.pacs import OrthancRest
from study_fetcher.retention import RetentionSweep
from study_fetcher.store import EnrolmentStore, JobStore, TransferStore

from .conftest import (
    FETCH_OWNER,
    FETCH_PATIENT,
    Deployment,
    Harness,
    absent_from_viewer,
    fresh_studies,
    now,
    started_with,
    store,
    viewer_instances,
)

# A second PACS patient of the fetcher tests (another hospital id of the same person, or another person).
OTHER_PATIENT = SyntheticPatient(
    "fetcher-other", "second patient of the study-fetcher tests", "T9991", "CHU-FICTIF-TOURS", "AUTRE-ESSAI^Test",
    None, "19991231", "F", "ISO_IR 100", 1,
)  # fmt: skip
OTHER_OWNER = ("T9991", "CHU-FICTIF-TOURS")


def mirc_requests(operation: str) -> float:
    """DICOM requests this test process sent to MIRC (every in-process service counts here)."""
    return sum(
        REGISTRY.get_sample_value(
            "proxymage_dicom_requests_total", {"peer": "MIRC", "operation": operation, "outcome": outcome}
        )
        or 0.0
        for outcome in ("ok", "transient", "permanent", "error")
    )


async def own_and_foreign(
    deployment: Deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> tuple[Harness, SyntheticStudy, SyntheticStudy]:
    """A running fetcher, a fresh study of the fetcher tests' patient and one of OTHER_PATIENT, both in MIRC and
    not in the viewer store."""
    (own,) = fresh_studies(1)
    (foreign,) = synthetic_studies(random.randrange(10**12), (dataclasses.replace(OTHER_PATIENT, studies=1),))
    return await started_with(deployment, mirc, stack_env, [own, foreign]), own, foreign


async def purge_requested_at(harness: Harness, uid: str) -> object:
    """When a purge of the study was last owed (None if never): taken before an action that owes another one."""
    transfer = await harness.transfer(uid)
    return None if transfer is None else transfer.get("purge_requested_at")


async def wait_purged(harness: Harness, uid: str, owed_before: object = None) -> None:
    """The purge the fetcher owed (after `owed_before`, the previous purge of the study, if any) is done
    (recorded once the viewer store answered the deletion, after any move of the study ended), and the viewer
    store holds nothing of the study. Without the mark, the previous purge's settled state would pass for it
    while the new one is not even owed yet."""

    async def settled() -> bool:
        transfer = await harness.transfer(uid)
        return (
            transfer is not None
            and transfer.get("purge_requested_at") not in (None, owed_before)
            and transfer.get("purge_pending") is False
        )

    await eventually(settled, 30, f"the purge of {uid[-12:]} settled")
    assert viewer_instances(harness.stack_env, uid) is None


async def test_selection_waits_for_the_identity_and_never_moves_another_patients_study(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    harness, own, foreign = await own_and_foreign(deployment, mirc, stack_env)
    uids = [own.study_instance_uid, foreign.study_instance_uid]
    # Selection before any identity outcome: queued, waiting, nothing moved.
    await harness.select("enr-wait", uids, identify=False)
    for uid in uids:
        held = await harness.wait_status("enr-wait", uid, "queued")
        assert held.reason_code == "waiting_identity"
        assert held.reason == "en attente de l'identification du patient dans le PACS régional"
    assert [await harness.transfer(uid) for uid in uids] == [None, None]
    # Matched to the fetcher's patient: its study moves; the other patient's study fails, never moved.
    await harness.identity("enr-wait", [FETCH_OWNER])
    await harness.wait_status("enr-wait", own.study_instance_uid, "available")
    denied = await harness.wait_status("enr-wait", foreign.study_instance_uid, "failed")
    assert (denied.reason_code, denied.reason) == ("not_patient_study", "examen n'appartenant pas au patient identifié")
    assert viewer_instances(stack_env, own.study_instance_uid) == len(own.instances)
    assert viewer_instances(stack_env, foreign.study_instance_uid) is None
    assert await harness.transfer(foreign.study_instance_uid) is None


async def test_unmatched_and_no_consent_deny_without_querying_mirc(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    (study,) = fresh_studies(1)
    harness = await started_with(deployment, mirc, stack_env, [study])
    uid = study.study_instance_uid
    await harness.identity("enr-none", [], status="unmatched")
    await harness.identity("enr-noconsent", [], status="no_consent")
    await harness.catalogue("enr-none")
    await harness.catalogue("enr-noconsent")
    before = (mirc_requests("C-FIND"), mirc_requests("C-MOVE"))
    await harness.select("enr-none", [uid])
    await harness.select("enr-noconsent", [uid])
    await harness.refresh("enr-noconsent")
    assert (await harness.wait_status("enr-none", uid, "failed")).reason_code == "patient_not_found"
    assert (await harness.wait_status("enr-noconsent", uid, "failed")).reason_code == "no_consent"
    # A sentinel on another enrolment, handled after them: by then, nothing was asked of MIRC for these two.
    assert (mirc_requests("C-FIND"), mirc_requests("C-MOVE")) == before
    assert viewer_instances(stack_env, uid) is None
    assert await harness.transfer(uid) is None


async def test_withdrawal_removes_purges_empties_the_catalogue_and_stops_querying(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    studies = fresh_studies(2)
    harness = await started_with(deployment, mirc, stack_env, studies)
    uids = [s.study_instance_uid for s in studies]
    await harness.select("enr-wd", uids)
    await harness.select("enr-wd-same-patient", [uids[0]])  # a second enrolment of the same patient
    for enrolment, uid in (("enr-wd", uids[0]), ("enr-wd", uids[1]), ("enr-wd-same-patient", uids[0])):
        await harness.wait_status(enrolment, uid, "available")
    catalogues = len([c for c in harness.catalogues if c.enrolment_id == "enr-wd"])

    await harness.identity("enr-wd", [], status="withdrawn")
    for uid in uids:
        removed = await harness.wait_status("enr-wd", uid, "removed")
        assert (removed.reason_code, removed.reason) == (
            "enrolment_withdrawn",
            "inscription annulée : les images ont été retirées",
        )
    # Only the study no other live enrolment needs leaves the viewer store; the other keeps its copy, whole.
    await wait_purged(harness, uids[1])
    assert viewer_instances(stack_env, uids[0]) == len(studies[0].instances)
    assert harness.latest("enr-wd-same-patient", uids[0]).status == "available"  # type: ignore[union-attr]
    emptied = await harness.catalogue("enr-wd", count=catalogues + 1)
    assert (emptied.status, emptied.studies) == ("listed", ())

    # Withdrawn: a refresh and a new selection query no PACS and move nothing.
    before = (mirc_requests("C-FIND"), mirc_requests("C-MOVE"))
    await harness.refresh("enr-wd")
    await harness.select("enr-wd", uids)
    for uid in uids:
        again = await harness.wait_status("enr-wd", uid, "failed", after_version=removed.version - 10)
        assert again.reason_code == "enrolment_withdrawn"
    assert (mirc_requests("C-FIND"), mirc_requests("C-MOVE")) == before
    assert viewer_instances(stack_env, uids[1]) is None

    # The second enrolment withdrawn too: now nobody needs the shared study.
    listed = len([c for c in harness.catalogues if c.enrolment_id == "enr-wd-same-patient"])

    async def owed_and_kept() -> bool:  # by the first withdrawal, and kept: the second enrolment still used it
        transfer = await harness.transfer(uids[0])
        return transfer is not None and transfer.get("purge_requested_at") is not None and not transfer["purge_pending"]

    await eventually(owed_and_kept, 30, "the first withdrawal's purge of the shared study settled as in use")
    kept_at = await purge_requested_at(harness, uids[0])
    await harness.identity("enr-wd-same-patient", [], status="no_consent")
    removed = await harness.wait_status("enr-wd-same-patient", uids[0], "removed")
    assert removed.reason_code == "consent_withdrawn"
    await wait_purged(harness, uids[0], owed_before=kept_at)
    emptied = await harness.catalogue("enr-wd-same-patient", count=listed + 1)  # the handler's last step
    assert emptied.studies == ()


async def test_a_selection_older_than_the_withdrawal_never_moves_anything(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    (study,) = fresh_studies(1)
    harness = await started_with(deployment, mirc, stack_env, [study])
    selected_at = now()
    withdrawn_at = selected_at + dt.timedelta(seconds=5)
    # The withdrawal is consumed first, the (older) selection afterwards.
    await harness.identity("enr-late-sel", [], status="withdrawn", source_occurred_at=withdrawn_at)
    await harness.catalogue("enr-late-sel")
    await harness.select(
        "enr-late-sel",
        [],
        payload={
            "event_id": "0f5c8a9e-6a1f-4c3e-9d8b-2a7e4b1c0d11",
            "occurred_at": selected_at.isoformat(),
            "enrolment_id": "enr-late-sel",
            "study_instance_uids": [study.study_instance_uid],
            "expertise_requested": False,
        },
    )
    removed = await harness.wait_status("enr-late-sel", study.study_instance_uid, "removed")
    assert removed.reason_code == "enrolment_withdrawn"
    assert await harness.transfer(study.study_instance_uid) is None
    assert viewer_instances(stack_env, study.study_instance_uid) is None


async def test_corrected_identity_removes_only_the_unlinked_patients_studies(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    harness, own, foreign = await own_and_foreign(deployment, mirc, stack_env)
    uids = [own.study_instance_uid, foreign.study_instance_uid]
    await harness.matched("enr-fix", [FETCH_OWNER, OTHER_OWNER])
    await harness.select("enr-fix", uids)
    for uid in uids:
        await harness.wait_status("enr-fix", uid, "available")
    listed = len([c for c in harness.catalogues if c.enrolment_id == "enr-fix"])
    await harness.identity("enr-fix", [FETCH_OWNER])  # corrected: only the first PACS patient is the patient
    removed = await harness.wait_status("enr-fix", uids[1], "removed")
    assert removed.reason_code == "identity_changed"
    await wait_purged(harness, uids[1])
    assert harness.latest("enr-fix", uids[0]).status == "available"  # type: ignore[union-attr]
    assert viewer_instances(stack_env, uids[0]) == len(own.instances)
    relisted = await harness.catalogue("enr-fix", count=listed + 1)  # the corrected identity's catalogue
    assert uids[1] not in {row.study_instance_uid for row in relisted.studies}


async def test_consent_withdrawn_during_a_move_leaves_nothing_in_the_viewer_store(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    study = large_study(random.randrange(10**12), 120, FETCH_PATIENT)
    await store([study], mirc)
    absent_from_viewer(stack_env, study)
    harness, start = await deployment(cancel_poll_seconds=0.2)
    await start()
    uid = study.study_instance_uid
    await harness.select("enr-cancel", [uid])
    await harness.wait_status("enr-cancel", uid, "retrieving")
    listed = len([c for c in harness.catalogues if c.enrolment_id == "enr-cancel"])
    await harness.identity("enr-cancel", [], status="no_consent")
    removed = await harness.wait_status("enr-cancel", uid, "removed")
    assert removed.reason_code == "consent_withdrawn"
    await wait_purged(harness, uid)
    assert harness.latest("enr-cancel", uid).status == "removed"  # type: ignore[union-attr]
    assert not [s for s in harness.of("enr-cancel", uid) if s.status == "available" and s.version > removed.version]
    assert (await harness.catalogue("enr-cancel", count=listed + 1)).studies == ()


async def test_retention_deletes_an_expired_enrolment_and_purges_only_what_no_live_enrolment_needs(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    shared, alone = fresh_studies(2)
    await store([shared, alone], mirc)
    absent_from_viewer(stack_env, shared, alone)
    harness, start = await deployment(retention_days=30, retention_sweep_seconds=0.5)
    await start()
    today = dt.date.today()
    uids = [shared.study_instance_uid, alone.study_instance_uid]
    # The expired enrolment's meeting is in two days and the sweep below is given a cutoff in ten: its
    # studies can be moved now (before the retrieval deadline) and still be past retention at the sweep.
    await harness.matched("enr-ret-old", meeting_date=today + dt.timedelta(days=2))
    await harness.select("enr-ret-old", uids)
    await harness.matched("enr-ret-live", meeting_date=today + dt.timedelta(days=60))  # same patient
    await harness.select("enr-ret-live", [shared.study_instance_uid])
    for enrolment, uid in (("enr-ret-old", uids[0]), ("enr-ret-old", uids[1]), ("enr-ret-live", uids[0])):
        await harness.wait_status(enrolment, uid, "available")

    async def moves_over() -> bool:
        # `available` is published before the move's leases are given back; a sweep meeting a held lease leaves
        # the purge to its next round, and this test checks a single round.
        transfers = [await harness.transfer(uid) for uid in uids]
        return all((transfer or {}).get("lease_owner") is None for transfer in transfers)

    await eventually(moves_over, 20, "the moves' leases given back")
    database = harness.mongo[harness.settings.database_name()]

    # Another replica's sweep (the service's own runs every 0.5 s with today's cutoff: nothing is due for it).
    jobs, transfers = JobStore(database), TransferStore(database)
    purge = OrthancRest(harness.settings.viewer_rest())
    cleaner = ViewerCleaner(
        jobs=jobs, transfers=transfers, purge=purge, owner="retention-test", lease=dt.timedelta(seconds=5), clock=now
    )
    sweep = RetentionSweep(
        enrolments=EnrolmentStore(database), jobs=jobs, transfers=transfers, cleaner=cleaner, clock=now
    ).sweep_expired
    cutoff = today + dt.timedelta(days=10)
    try:
        assert await sweep(cutoff) == 1
        # Every document of the expired enrolment is gone, its own study with it (transfer record included).
        assert await database["enrolments"].find_one({"_id": "enr-ret-old"}) is None
        assert await harness.jobs("enr-ret-old") == []
        assert viewer_instances(stack_env, uids[1]) is None
        assert await harness.transfer(uids[1]) is None
        # The study the live enrolment still needs stays whole in the viewer store, its documents with it.
        assert viewer_instances(stack_env, uids[0]) == len(shared.instances)
        assert [job["state"] for job in await harness.jobs("enr-ret-live")] == ["available"]
        assert await database["enrolments"].find_one({"_id": "enr-ret-live"}) is not None
        assert (await harness.transfer(uids[0]) or {}).get("purge_pending") is False
        # A second sweep is a no-op.
        assert await sweep(cutoff) == 0
        assert viewer_instances(stack_env, uids[0]) == len(shared.instances)
        assert [job["state"] for job in await harness.jobs("enr-ret-live")] == ["available"]
    finally:
        await purge.close()

    # The service's own sweeper deletes an enrolment whose meeting is past its 30 days.
    await harness.identity("enr-ret-past", [], today - dt.timedelta(days=31), status="unmatched")
    await harness.catalogue("enr-ret-past")

    async def swept() -> bool:
        return await database["enrolments"].find_one({"_id": "enr-ret-past"}) is None

    await eventually(swept, 30, "the service's sweeper to delete enr-ret-past")
    assert await database["enrolments"].find_one({"_id": "enr-ret-live"}) is not None
