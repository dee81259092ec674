"""The Kafka use cases (`study_fetcher.handlers`) and the job updater, with in-memory fakes: every branch, no
server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from dataclasses import dataclass, field

import pytest
from proxymage_shared.dicom import DicomUnavailableError, MalformedAnswerError, StudyRecord
from proxymage_shared.errors import TransientError, WriteConflictError
from proxymage_shared.events import (
    IdentityResolved,
    IdentityStatus,
    ImagingCatalogued,
    ImagingRefresh,
    PacsPatientRef,
    StudiesSelected,
    StudyRemoved,
    StudyStatusChanged,
)
from proxymage_shared.kafka import Delivery
from proxymage_shared.retry import BackoffSchedule
from study_fetcher import domain
from study_fetcher.cleanup import ViewerCleaner
from study_fetcher.handlers import Catalogue, CatalogueOptions, Handlers, RetrievalOptions
from study_fetcher.ports import StoredJob, job_key_of
from study_fetcher.updater import JobUpdater, status_event

from .fakes import FakeEnrolmentStore, FakeJobStore, FakePacs, FakePurge, FakeTransferStore

NOW = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
ENROLMENT = "enr-1"
PATIENT = PacsPatientRef(patient_id="P1", issuer="HOSP")
STUDY, OTHER = "1.2.3", "1.2.4"


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def record(study_instance_uid: str, patient: PacsPatientRef = PATIENT) -> StudyRecord:
    return StudyRecord(
        study_instance_uid=study_instance_uid,
        patient_id=patient.patient_id,
        issuer=patient.issuer,
        date=dt.date(2026, 10, 1),
        time=None,
        description="CT",
        modalities=("CT",),
        series=1,
        instances=10,
        accession_number=None,
        institution_name=None,
    )


@dataclass
class World:
    enrolments: FakeEnrolmentStore = field(default_factory=FakeEnrolmentStore)
    jobs: FakeJobStore = field(default_factory=FakeJobStore)
    transfers: FakeTransferStore = field(default_factory=FakeTransferStore)
    pacs: FakePacs = field(default_factory=FakePacs)
    purge: FakePurge = field(default_factory=FakePurge)
    statuses: list[StudyStatusChanged] = field(default_factory=list)
    catalogues: list[ImagingCatalogued] = field(default_factory=list)
    wakes: int = 0
    purge_removed: bool = False

    def __post_init__(self) -> None:
        async def publish_status(event: StudyStatusChanged) -> None:
            self.statuses.append(event)

        async def publish_catalogue(event: ImagingCatalogued) -> None:
            self.catalogues.append(event)

        def wake() -> None:
            self.wakes += 1

        policy = domain.RetrievalPolicy(BackoffSchedule(jitter=0), random.Random(1))
        self.updater = JobUpdater(self.jobs, publish_status, policy, lambda: NOW)
        self.catalogue = Catalogue(
            self.enrolments,
            self.pacs,
            publish_catalogue,
            CatalogueOptions(retries=BackoffSchedule(jitter=0)),
            lambda: NOW,
        )
        self.cleaner = ViewerCleaner(
            jobs=self.jobs,
            transfers=self.transfers,
            purge=self.purge,
            owner="me",
            lease=dt.timedelta(minutes=1),
            clock=lambda: NOW,
        )
        self.handlers = Handlers(
            enrolments=self.enrolments,
            jobs=self.jobs,
            updater=self.updater,
            catalogue=self.catalogue,
            cleaner=self.cleaner,
            options=RetrievalOptions(purge_removed=self.purge_removed),
            wake=wake,
            clock=lambda: NOW,
        )

    def state(self, study_instance_uid: str = STUDY) -> tuple[str, bool, str | None]:
        job = self.jobs.job(job_key_of(ENROLMENT, study_instance_uid))
        return job.state, job.held, job.reason_code


def identity(
    status: IdentityStatus = "matched",
    *,
    seconds: float = 0,
    source: uuid.UUID | None = None,
    patients: tuple[PacsPatientRef, ...] = (PATIENT,),
    meeting_date: dt.date | None = dt.date(2026, 11, 20),
) -> IdentityResolved:
    return IdentityResolved(
        event_id=uuid.uuid4(),
        occurred_at=at(seconds),
        enrolment_id=ENROLMENT,
        source_event_id=source or uuid.uuid4(),
        source_occurred_at=at(seconds),
        meeting_date=meeting_date,
        status=status,
        pacs_patients=patients if status == "matched" else (),
    )


def selection(*study_instance_uids: str, seconds: float = 1) -> StudiesSelected:
    return StudiesSelected(
        event_id=uuid.uuid4(),
        occurred_at=at(seconds),
        enrolment_id=ENROLMENT,
        study_instance_uids=study_instance_uids,
        expertise_requested=False,
    )


def removal(study_instance_uid: str = STUDY, seconds: float = 2) -> StudyRemoved:
    return StudyRemoved(
        event_id=uuid.uuid4(), occurred_at=at(seconds), enrolment_id=ENROLMENT, study_instance_uid=study_instance_uid
    )


def refresh(seconds: float = 3) -> ImagingRefresh:
    return ImagingRefresh(event_id=uuid.uuid4(), occurred_at=at(seconds), enrolment_id=ENROLMENT)


DELIVERED = Delivery(topic="t", partition=0, offset=0, key=ENROLMENT)


async def matched(world: World, *studies: str) -> IdentityResolved:
    world.pacs.studies[PATIENT.patient_id] = [record(uid) for uid in studies]
    event = identity()
    await world.handlers.on_identity_resolved(event, DELIVERED)
    return event


# --- identity outcomes and the catalogue ------------------------------------------------------------------------


async def test_a_match_lists_the_catalogue_sets_deadlines_and_is_done() -> None:
    world = World()
    await world.handlers.on_selected(selection(STUDY), DELIVERED)  # held: identity unknown
    event = await matched(world, STUDY)
    assert [(c.status, [s.study_instance_uid for s in c.studies]) for c in world.catalogues] == [("listed", [STUDY])]
    assert world.state() == ("queued", False, None)  # the held job was admitted once listed
    assert world.jobs.job(job_key_of(ENROLMENT, STUDY)).deadline is not None
    assert world.enrolments.docs[ENROLMENT]["identity_done"] is True
    assert world.wakes >= 2
    before = len(world.catalogues)
    await world.handlers.on_identity_resolved(event, DELIVERED)  # a replay once done: nothing
    assert len(world.catalogues) == before


async def test_an_older_identity_outcome_is_stale() -> None:
    world = World()
    await matched(world, STUDY)
    await world.handlers.on_identity_resolved(identity("unmatched", seconds=-60), DELIVERED)
    assert world.enrolments.docs[ENROLMENT]["identity_status"] == "matched"
    assert len(world.catalogues) == 1


async def test_an_unmatched_outcome_publishes_an_empty_catalogue_and_denies_held_jobs() -> None:
    world = World()
    await world.handlers.on_selected(selection(STUDY), DELIVERED)
    await world.handlers.on_identity_resolved(identity("unmatched", meeting_date=None), DELIVERED)
    assert [(c.status, c.studies) for c in world.catalogues] == [("listed", ())]
    assert world.state() == ("failed", False, "patient_not_found")


async def test_a_withdrawal_removes_the_jobs_and_purges_their_studies() -> None:
    world = World()
    await matched(world, STUDY)
    await world.handlers.on_selected(selection(STUDY), DELIVERED)
    world.purge.held.add(STUDY)
    await world.handlers.on_identity_resolved(identity("withdrawn", seconds=5), DELIVERED)
    assert world.state()[0] == "removed"
    assert world.purge.deleted == [STUDY]


async def test_an_error_for_the_identity_already_known_changes_nothing() -> None:
    world = World()
    source = uuid.uuid4()
    world.pacs.studies[PATIENT.patient_id] = [record(STUDY)]
    await world.handlers.on_identity_resolved(identity(source=source), DELIVERED)
    await world.handlers.on_identity_resolved(identity("error", seconds=5, source=source), DELIVERED)
    assert world.enrolments.docs[ENROLMENT]["identity_status"] == "matched"
    assert len(world.catalogues) == 1


async def test_an_error_for_a_new_identity_holds_new_selections_without_a_catalogue() -> None:
    world = World()
    await matched(world, STUDY)
    await world.handlers.on_identity_resolved(identity("error", seconds=5), DELIVERED)
    assert world.enrolments.docs[ENROLMENT]["identity_status"] == "pending"
    assert len(world.catalogues) == 1  # no catalogue for a pending identity
    await world.handlers.on_selected(selection(OTHER, seconds=6), DELIVERED)
    assert world.state(OTHER) == ("queued", True, "waiting_identity")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (DicomUnavailableError("down"), "pacs_unreachable"),
        (MalformedAnswerError("garbled"), "pacs_error"),
        (TransientError("other"), "catalogue_error"),
    ],
)
async def test_a_failed_catalogue_is_published_as_an_error_and_retried_later(error: Exception, code: str) -> None:
    world = World()
    world.pacs.studies[PATIENT.patient_id] = error
    await world.handlers.on_identity_resolved(identity(), DELIVERED)
    [outcome] = world.catalogues
    assert (outcome.status, outcome.reason_code) == ("error", code)
    doc = world.enrolments.docs[ENROLMENT]
    assert (doc["catalogue_attempts"], doc["catalogue_due_at"]) == (1, NOW + dt.timedelta(seconds=15))


async def test_answers_of_another_patient_are_dropped_from_the_catalogue() -> None:
    world = World()
    world.pacs.studies[PATIENT.patient_id] = [record(STUDY), record(OTHER, PacsPatientRef(patient_id="X", issuer=None))]
    await world.handlers.on_identity_resolved(identity(), DELIVERED)
    assert [s.study_instance_uid for s in world.catalogues[0].studies] == [STUDY]


async def test_a_listing_for_a_replaced_identity_is_not_recorded() -> None:
    world = World()
    event = await matched(world, STUDY)
    await world.handlers.on_identity_resolved(identity(seconds=5), DELIVERED)  # a newer identity
    listed = await world.catalogue.list_studies(
        ENROLMENT, (PATIENT,), "late", previous_failures=0, identity_event_id=str(event.event_id)
    )
    assert listed.status == "listed"
    assert world.enrolments.docs[ENROLMENT]["catalogue_identity"] != str(event.event_id)


async def test_retry_due_lists_a_due_matched_enrolment_again() -> None:
    world = World()
    world.pacs.studies[PATIENT.patient_id] = DicomUnavailableError("down")
    await world.handlers.on_identity_resolved(identity(), DELIVERED)
    world.pacs.studies[PATIENT.patient_id] = [record(STUDY)]
    world.catalogue._clock = lambda: at(60)
    assert await world.catalogue.retry_due() == 1
    assert [c.status for c in world.catalogues] == ["error", "listed"]
    assert world.enrolments.docs[ENROLMENT]["catalogue_due_at"] is None


async def test_retry_due_queries_no_pacs_for_an_enrolment_no_longer_matched() -> None:
    world = World()
    world.pacs.studies[PATIENT.patient_id] = DicomUnavailableError("down")
    await world.handlers.on_identity_resolved(identity(), DELIVERED)
    world.enrolments.docs[ENROLMENT]["identity_status"] = "withdrawn"
    world.catalogue._clock = lambda: at(60)
    assert await world.catalogue.retry_due() == 1
    assert len(world.catalogues) == 1
    assert world.enrolments.docs[ENROLMENT]["catalogue_due_at"] is None


# --- refresh -----------------------------------------------------------------------------------------------------


async def test_a_refresh_retries_waiting_jobs_and_lists_again() -> None:
    world = World()
    await matched(world, STUDY)
    await world.handlers.on_selected(selection(STUDY), DELIVERED)
    stored = await world.jobs.get(job_key_of(ENROLMENT, STUDY))
    assert stored is not None
    await world.updater.apply(stored, domain.Start(NOW))
    stored = await world.jobs.get(job_key_of(ENROLMENT, STUDY))
    assert stored is not None
    await world.updater.apply(stored, domain.Retry(NOW, domain.NOT_IN_MIRC))
    assert world.state()[0] == "not_yet_available"
    wakes = world.wakes
    event = refresh()
    await world.handlers.on_refresh(event, DELIVERED)
    refreshed = world.jobs.job(job_key_of(ENROLMENT, STUDY))
    assert (refreshed.state, refreshed.next_attempt_at) == ("not_yet_available", NOW)  # due now
    assert world.wakes == wakes + 1
    assert len(world.catalogues) == 2
    assert world.enrolments.docs[ENROLMENT]["refresh_done"] is True
    await world.handlers.on_refresh(event, DELIVERED)  # duplicate
    assert len(world.catalogues) == 2


async def test_a_refresh_of_an_enrolment_not_matched_queries_no_pacs() -> None:
    world = World()
    await world.handlers.on_refresh(refresh(), DELIVERED)
    assert world.catalogues == []
    assert world.enrolments.docs[ENROLMENT]["refresh_done"] is True


# --- selections and removals -------------------------------------------------------------------------------------


async def test_a_selection_creates_published_jobs_and_wakes_the_workers() -> None:
    world = World()
    await matched(world, STUDY)
    event = selection(STUDY)
    await world.handlers.on_selected(event, DELIVERED)
    assert world.state() == ("queued", False, None)
    assert [(s.study_instance_uid, s.status, s.version) for s in world.statuses] == [(STUDY, "queued", 1)]
    assert world.enrolments.docs[ENROLMENT]["selection_done"] is True
    assert world.wakes == 1  # once, as soon as `queued` was published: one idle worker claims it
    wakes = world.wakes
    await world.handlers.on_selected(event, DELIVERED)  # duplicate
    assert world.wakes == wakes


async def test_a_worker_is_woken_as_soon_as_queued_is_published_not_after_its_acknowledgement() -> None:
    world = World()
    await matched(world, STUDY)
    seen: list[tuple[list[str], bool]] = []
    key = job_key_of(ENROLMENT, STUDY)
    world.handlers._wake = lambda: seen.append(([s.status for s in world.statuses], world.jobs.rows[key].unpublished))
    await world.handlers.on_selected(selection(STUDY), DELIVERED)
    assert seen == [(["queued"], True)]  # once; `queued` is in Kafka, its acknowledgement not yet written
    assert world.jobs.rows[key].unpublished is False


async def test_a_stale_selection_changes_nothing() -> None:
    world = World()
    await world.handlers.on_selected(selection(STUDY, seconds=10), DELIVERED)
    await world.handlers.on_selected(selection(OTHER, seconds=5), DELIVERED)
    assert await world.jobs.get(job_key_of(ENROLMENT, OTHER)) is None


async def test_a_new_selection_keeps_selected_jobs_and_removes_the_others() -> None:
    world = World(purge_removed=True)
    await matched(world, STUDY, OTHER)
    await world.handlers.on_selected(selection(STUDY, OTHER), DELIVERED)
    await world.handlers.on_selected(selection(STUDY, seconds=5), DELIVERED)
    assert world.state(STUDY)[0] == "queued"
    assert world.state(OTHER)[0] == "removed"
    assert world.purge.deleted == [OTHER]


async def test_a_selection_racing_with_another_handler_applies_to_the_job_it_created() -> None:
    world = World()
    await matched(world, STUDY)
    inserted: list[str] = []
    real_insert = world.jobs.insert

    async def racing_insert(enrolment_id: str, uid: str, job: domain.Job, now: dt.datetime) -> object:
        await real_insert(enrolment_id, uid, job, now)  # the other handler's, first
        inserted.append(uid)
        return None

    world.jobs.insert = racing_insert
    await world.handlers.on_selected(selection(STUDY, seconds=5), DELIVERED)
    assert inserted == [STUDY]
    assert world.state()[0] == "queued"
    assert world.statuses == []  # the other handler publishes its version


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [("no_consent", ("removed", False, "consent_withdrawn")), ("withdrawn", ("removed", False, "enrolment_withdrawn"))],
)
async def test_a_closure_handled_while_a_selection_writes_its_jobs_still_reaches_them(
    outcome: IdentityStatus, expected: tuple[str, bool, str]
) -> None:
    """The identity outcome (another topic) lands after the selection read the lifecycle and before its job is
    written: the closure's re-judging does not see the job, the selection must (never a move after consent is
    withdrawn, never `queued` for a withdrawn enrolment)."""
    world = World()
    await matched(world, STUDY)
    real_insert = world.jobs.insert

    async def closure_first(enrolment_id: str, uid: str, job: domain.Job, now: dt.datetime) -> object:
        await world.handlers.on_identity_resolved(identity(outcome, seconds=5), DELIVERED)
        return await real_insert(enrolment_id, uid, job, now)

    world.jobs.insert = closure_first
    await world.handlers.on_selected(selection(STUDY, seconds=2), DELIVERED)
    assert world.state() == expected
    assert world.statuses[-1].status == "removed"


async def test_a_denial_judged_with_an_old_closure_is_judged_again_with_the_new_one() -> None:
    """Withdrawn, re-enrolled and withdrawn again: the selection made in between arrives before the new outcome.
    Judged with the old closure it is denied (`failed`); the new closure, newer than the selection, voids it."""
    world = World()
    await matched(world, STUDY)
    await world.handlers.on_identity_resolved(identity("withdrawn", seconds=2), DELIVERED)
    real_insert = world.jobs.insert

    async def new_closure_first(enrolment_id: str, uid: str, job: domain.Job, now: dt.datetime) -> object:
        await world.handlers.on_identity_resolved(identity("withdrawn", seconds=9), DELIVERED)
        return await real_insert(enrolment_id, uid, job, now)

    world.jobs.insert = new_closure_first
    await world.handlers.on_selected(selection(STUDY, seconds=7), DELIVERED)
    assert world.state() == ("removed", False, "enrolment_withdrawn")


async def test_a_removal_of_a_selected_study_removes_its_job_and_may_purge() -> None:
    world = World(purge_removed=True)
    await matched(world, STUDY)
    await world.handlers.on_selected(selection(STUDY), DELIVERED)
    await world.handlers.on_removed(removal(), DELIVERED)
    assert world.state()[0] == "removed"
    assert world.purge.deleted == [STUDY]


async def test_a_removal_keeps_the_viewer_copy_unless_the_site_purges_removals() -> None:
    world = World()
    await matched(world, STUDY)
    await world.handlers.on_selected(selection(STUDY), DELIVERED)
    await world.handlers.on_removed(removal(), DELIVERED)
    assert world.state()[0] == "removed"
    assert world.purge.deleted == []


async def test_a_removal_before_any_selection_leaves_a_tombstone_that_voids_an_older_selection() -> None:
    world = World()
    await matched(world, STUDY)
    await world.handlers.on_removed(removal(seconds=10), DELIVERED)
    assert world.state()[0] == "removed"
    assert world.statuses == []  # version 0: never published
    await world.handlers.on_selected(selection(STUDY, seconds=5), DELIVERED)
    assert world.state()[0] == "removed"


async def test_a_removal_racing_with_a_selection_applies_to_the_created_job() -> None:
    world = World()
    await matched(world, STUDY)
    real_insert = world.jobs.insert

    async def racing_insert(enrolment_id: str, uid: str, job: domain.Job, now: dt.datetime) -> object:
        admitted = domain.new_job(NOW, None, domain.Admit())
        await real_insert(enrolment_id, uid, admitted, now)  # a selection's, first
        return None

    world.jobs.insert = racing_insert
    await world.handlers.on_removed(removal(seconds=10), DELIVERED)
    assert world.state()[0] == "removed"


# --- the job updater ---------------------------------------------------------------------------------------------


async def test_an_input_that_does_not_apply_changes_nothing() -> None:
    world = World()
    stored = await world.jobs.insert(ENROLMENT, STUDY, domain.new_job(NOW, None, domain.Admit()), NOW)
    assert stored is not None
    after, changed = await world.updater.apply(stored, domain.Progressed(1, 2))  # not retrieving
    assert (after, changed) == (stored, False)


async def test_a_lost_race_is_decided_again_on_the_job_as_it_now_is() -> None:
    world = World()
    stored = await world.jobs.insert(ENROLMENT, STUDY, domain.new_job(NOW, None, domain.Admit()), NOW)
    assert stored is not None
    raced: list[str] = []

    def once(current: StoredJob) -> None:
        if not raced:
            raced.append("x")
            world.jobs.bump(stored.job_key)

    world.jobs.before_save = once
    after, changed = await world.updater.apply(stored, domain.Start(NOW))
    assert (changed, after.job.state) == (True, "retrieving")
    assert after.revision == stored.revision + 2


async def test_a_job_that_keeps_changing_is_a_write_conflict() -> None:
    world = World()
    stored = await world.jobs.insert(ENROLMENT, STUDY, domain.new_job(NOW, None, domain.Admit()), NOW)
    assert stored is not None
    world.jobs.before_save = lambda current: world.jobs.bump(current.job_key)
    with pytest.raises(WriteConflictError):
        await world.updater.apply(stored, domain.Start(NOW))


async def test_versions_written_but_not_acknowledged_are_published_again() -> None:
    world = World()
    stored = await world.jobs.insert(ENROLMENT, STUDY, domain.new_job(NOW, None, domain.Admit()), NOW)
    assert stored is not None
    assert await world.updater.republish_pending(at(60)) == 1
    assert [s.event_id for s in world.statuses] == [status_event(stored).event_id]
    assert await world.updater.republish_pending(at(60)) == 0


def test_a_status_event_id_is_derived_from_the_job_and_its_version() -> None:
    job = domain.new_job(NOW, None, domain.Admit())
    stored = StoredJob(job_key_of(ENROLMENT, STUDY), ENROLMENT, STUDY, job, 1, None, NOW, NOW)
    again = dataclasses.replace(stored, revision=5)
    newer = dataclasses.replace(stored, job=dataclasses.replace(job, version=job.version + 1))
    assert status_event(again).event_id == status_event(stored).event_id
    assert status_event(newer).event_id != status_event(stored).event_id
