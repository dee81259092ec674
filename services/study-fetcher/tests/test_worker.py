"""The retrieval worker's steps (`study_fetcher.worker.Retriever`) with in-memory stores and a scripted PACS:
claim, transfer lease, companions, MIRC check, reuse of a verified move, the move and each way it ends,
verification, cancellation, progress, lease renewal. No server."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from collections.abc import Callable

import pytest
from proxymage_dev.testing import eventually
from proxymage_shared import dicom
from proxymage_shared.dicom.budget import AssociationBudgetBusyError
from proxymage_shared.errors import TransientError
from proxymage_shared.reasons import Reason
from study_fetcher import domain
from study_fetcher.ports import AfterSave, StoredJob, StudyPresence, Transfer, job_key_of
from study_fetcher.worker import LEASES_LOST, Retriever, WorkerOptions

from .fakes import FakePacs
from .test_handlers import ENROLMENT, NOW, STUDY, World

OTHER_ENROLMENT = "enr-2"
KEY = job_key_of(ENROLMENT, STUDY)


async def until(predicate: Callable[[], bool]) -> None:
    async def check() -> bool:
        return predicate()

    await eventually(check, timeout=5)


def options(**changes: object) -> WorkerOptions:
    values: dict[str, object] = {
        "lease": dt.timedelta(seconds=15),
        "renew_every": dt.timedelta(seconds=5),
        "transfer_wait": dt.timedelta(seconds=1),
        "progress_interval_seconds": 0.5,
        "cancel_poll_seconds": 1.0,
        **changes,
    }
    return WorkerOptions(**values)  # type: ignore[arg-type]


def retriever(world: World, **changes: object) -> Retriever:
    return Retriever(
        jobs=world.jobs,
        transfers=world.transfers,
        updater=world.updater,
        pacs=world.pacs,
        options=options(**changes),
        owner="w1",
        cleaner=world.cleaner,
        clock=lambda: NOW,
    )


async def queued(world: World, enrolment_id: str = ENROLMENT, *, held: bool = False) -> None:
    admission = domain.Hold(Reason.of("waiting_identity")) if held else domain.Admit()
    await world.jobs.insert(enrolment_id, STUDY, domain.new_job(NOW, None, admission), NOW)


def state(world: World, job_key: str = KEY) -> tuple[str, str | None]:
    job = world.jobs.job(job_key)
    return job.state, job.reason_code


async def run(world: World, **options: object) -> bool:
    return await retriever(world, **options).run_once()


async def test_no_due_job_is_no_work() -> None:
    assert await run(World()) is False


async def test_a_study_moved_for_another_enrolment_postpones_the_job_until_that_move_ends() -> None:
    world = World()
    await queued(world)
    world.transfers.transfers[STUDY] = Transfer(STUDY, "w2", NOW + dt.timedelta(minutes=1))
    assert await run(world) is True
    row = world.jobs.rows[KEY]
    assert (row.waiting, row.due_at, row.stored.lease_owner) == (True, NOW + dt.timedelta(seconds=1), None)
    assert state(world) == ("queued", None)


async def test_a_study_not_yet_in_mirc_waits_and_the_transfer_is_released() -> None:
    world = World()
    await queued(world)
    assert await run(world) is True
    assert state(world) == ("not_yet_available", "not_in_mirc")
    transfer = world.transfers.transfers[STUDY]
    assert (transfer.lease_owner, transfer.verified_instances) == (None, None)
    assert world.jobs.rows[KEY].stored.lease_owner is None
    assert world.pacs.moves == []


@pytest.mark.parametrize(
    ("error", "code", "detail"),
    [(dicom.DicomUnavailableError("down"), "pacs_unreachable", None), (TransientError("odd"), "pacs_error", "odd")],
)
async def test_a_failed_mirc_check_is_retried_later(error: Exception, code: str, detail: str | None) -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = error
    await run(world)
    assert state(world) == ("not_yet_available", code)
    reason = world.jobs.job(KEY).reason or ""
    assert detail is None or f"TransientError: {detail}" in reason


async def test_a_verified_earlier_move_still_in_the_viewer_is_reused_without_moving() -> None:
    world = World()
    await queued(world)
    world.transfers.transfers[STUDY] = Transfer(STUDY, None, NOW - dt.timedelta(hours=1), verified_instances=10)
    world.pacs.mirc[STUDY] = world.pacs.viewer[STUDY] = StudyPresence(10)
    await run(world)
    assert state(world) == ("available", None)
    assert world.pacs.moves == []


@pytest.mark.parametrize("viewer", [StudyPresence(4), dicom.DicomUnavailableError("viewer down")])
async def test_a_verified_move_no_longer_in_the_viewer_is_moved_again(viewer: object) -> None:
    world = World()
    await queued(world)
    world.transfers.transfers[STUDY] = Transfer(STUDY, None, NOW - dt.timedelta(hours=1), verified_instances=10)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.viewer[STUDY] = viewer
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 10
    await run(world)
    assert state(world) == ("available", None)
    assert world.pacs.moves == [STUDY]
    transfer = world.transfers.transfers[STUDY]
    assert (transfer.moves, transfer.verified_instances) == (1, 10)


class GatedPacs(FakePacs):
    """A PACS whose C-FINDs each wait for a gate: a step run after another, not beside it, never ends."""

    def __init__(self, world: World, *, mirc_waits_for: asyncio.Event, asked: asyncio.Event) -> None:
        super().__init__(mirc=world.pacs.mirc, viewer=world.pacs.viewer, move_result=10, moved_to_viewer=10)
        self.mirc_waits_for, self.asked = mirc_waits_for, asked

    async def in_mirc(self, study_instance_uid: str) -> StudyPresence | None:
        self.asked.set()
        await self.mirc_waits_for.wait()
        return await super().in_mirc(study_instance_uid)


async def test_mirc_is_asked_while_the_jobs_are_started() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    started, asked = asyncio.Event(), asyncio.Event()
    world.pacs = GatedPacs(world, mirc_waits_for=started, asked=asked)
    save = world.jobs.save

    async def start_once_mirc_is_asked(
        stored: StoredJob, job: domain.Job, now: dt.datetime, *, then: AfterSave | None = None
    ) -> StoredJob | None:
        if job.state == "retrieving" and stored.job.state == "queued":
            await asyncio.wait_for(asked.wait(), 2)  # times out if MIRC is only asked after the start
            started.set()
        return await save(stored, job, now, then=then)

    world.jobs.save = start_once_mirc_is_asked  # type: ignore[method-assign]
    await asyncio.wait_for(run(world), 5)
    assert state(world) == ("available", None)
    assert [s.status for s in world.statuses] == ["retrieving", "retrieving", "available"][-len(world.statuses) :]


async def test_a_verified_earlier_move_is_checked_in_both_peers_at_once() -> None:
    world = World()
    await queued(world)
    world.transfers.transfers[STUDY] = Transfer(STUDY, None, NOW - dt.timedelta(hours=1), verified_instances=10)
    world.pacs.mirc[STUDY] = world.pacs.viewer[STUDY] = StudyPresence(10)
    viewer_asked = asyncio.Event()
    pacs = GatedPacs(world, mirc_waits_for=viewer_asked, asked=asyncio.Event())
    in_viewer = pacs.in_viewer

    async def asked_viewer(study_instance_uid: str) -> StudyPresence | None:
        viewer_asked.set()
        return await in_viewer(study_instance_uid)

    pacs.in_viewer = asked_viewer  # type: ignore[method-assign]
    world.pacs = pacs
    await asyncio.wait_for(run(world), 5)
    assert state(world) == ("available", None)
    assert pacs.moves == []


async def test_a_job_taken_before_its_start_moves_nothing_and_leaves_no_query_running() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    pacs = GatedPacs(world, mirc_waits_for=asyncio.Event(), asked=asyncio.Event())  # MIRC never answers
    world.pacs = pacs

    def taken_first(stored: StoredJob) -> None:
        if stored.lease_owner == "w1":  # w1 stalled past its lease: w2 has the job, w1's start applies to none
            world.jobs.take_over(KEY, "w2", NOW + dt.timedelta(minutes=1))

    world.jobs.before_save = taken_first
    assert await asyncio.wait_for(run(world), 5) is True
    assert pacs.moves == []
    assert world.statuses == []
    # The MIRC query, still waiting when the attempt ended, was cancelled with it.
    probes = [task for task in asyncio.all_tasks() if "_probe" in getattr(task.get_coro(), "__qualname__", "")]
    assert probes == []


async def test_a_worker_starting_a_move_wakes_one_other_idle_worker_to_look_for_more_work() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    worker = retriever(world)
    other, third = (asyncio.create_task(worker.wake.wait(5)) for _ in range(2))
    await until(lambda: worker.wake.idle == 2)

    async def moving(*_: object) -> None:
        await until(other.done)

    world.pacs.on_move = moving
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 10
    await worker.run_once()
    assert other.result() is True
    assert not third.done()  # one wake-up, one worker
    third.cancel()
    await asyncio.gather(third, return_exceptions=True)


async def test_a_complete_move_verified_in_the_viewer_makes_every_waiting_job_available_with_one_move() -> None:
    world = World()
    await queued(world)
    await queued(world, OTHER_ENROLMENT)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 10
    await run(world)
    assert state(world) == state(world, job_key_of(OTHER_ENROLMENT, STUDY)) == ("available", None)
    assert world.pacs.moves == [STUDY]


async def test_a_held_job_of_another_enrolment_is_not_moved_for() -> None:
    world = World()
    await queued(world)
    await queued(world, OTHER_ENROLMENT, held=True)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 10
    await run(world)
    assert state(world, job_key_of(OTHER_ENROLMENT, STUDY)) == ("queued", "waiting_identity")


async def test_a_move_the_viewer_does_not_fully_hold_is_incomplete() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 7
    await run(world)
    assert state(world) == ("not_yet_available", "move_incomplete")
    assert world.transfers.transfers[STUDY].verified_instances is None


@pytest.mark.parametrize(
    ("error", "expected", "text"),
    [
        (
            dicom.IncompleteMoveError("partial", result=dicom.MoveResult(0xB000, 7, 3, 0)),
            ("not_yet_available", "move_incomplete"),
            "3 instances sur 10 en échec",
        ),
        (
            dicom.IncompleteMoveError("warning", result=dicom.MoveResult(0xB000, 10, 0, 0)),
            ("not_yet_available", "move_incomplete"),
            "1 instances sur 11 en échec",
        ),
        (dicom.DicomPermanentError("refused", status=0xA801), ("failed", "move_refused"), None),
        (dicom.DicomPermanentError("refused"), ("failed", "move_refused"), "DicomPermanentError: refused"),
        (dicom.DicomUnavailableError("down"), ("not_yet_available", "pacs_unreachable"), None),
        (dicom.DicomTransientError("busy", status=0xA702), ("not_yet_available", "move_failed"), "statut 0xA702"),
        (dicom.DicomTransientError("busy"), ("not_yet_available", "move_failed"), None),
        (TransientError("odd"), ("not_yet_available", "move_failed"), "TransientError: odd"),
    ],
)
async def test_each_way_a_move_fails_is_recorded(error: Exception, expected: tuple[str, str], text: str | None) -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.move_result = error
    await run(world)
    assert state(world) == expected
    assert text is None or text in (world.jobs.job(KEY).reason or "")


async def test_a_move_mircs_budget_never_let_through_is_retried_and_not_counted_as_a_move() -> None:
    """Under load every slot of MIRC's budget can stay held past the wait: no C-MOVE was sent, so none is
    counted and an earlier verification is not forgotten for it; the job waits for the next try."""
    world = World()
    await queued(world)
    world.transfers.transfers[STUDY] = Transfer(STUDY, None, NOW - dt.timedelta(hours=1), verified_instances=10)
    world.pacs.mirc[STUDY] = StudyPresence(12)  # grown since: moved again
    world.pacs.budget_full = AssociationBudgetBusyError("the 3 associations allowed to MIRC stayed in use")
    await run(world)
    assert state(world) == ("not_yet_available", "move_failed")
    assert world.pacs.moves == []
    transfer = world.transfers.transfers[STUDY]
    assert (transfer.moves, transfer.verified_instances) == (0, 10)


async def test_a_viewer_that_cannot_be_asked_after_the_move_is_retried_later() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.viewer[STUDY] = dicom.DicomUnavailableError("viewer down")
    world.pacs.move_result = 10
    await run(world)
    assert state(world) == ("not_yet_available", "viewer_unreachable")


def removing_during_move(world: World) -> Callable[[str, object, threading.Event | None], object]:
    async def script(study_instance_uid: str, on_progress: object, cancel: threading.Event | None) -> None:
        stored = await world.jobs.get(KEY)
        assert stored is not None
        assert cancel is not None
        await world.updater.apply(stored, domain.Remove(NOW + dt.timedelta(seconds=1)))
        await world.transfers.request_purge(study_instance_uid, NOW)  # owed meanwhile, while the move holds it
        await until(cancel.is_set)
        raise dicom.MoveCancelledError("cancelled")

    return script


async def test_a_move_whose_jobs_are_all_removed_is_cancelled_and_its_study_purged() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.on_move = removing_during_move(world)
    await run(world, cancel_poll_seconds=0.01)
    assert state(world)[0] == "removed"
    assert world.purge.deleted == [STUDY]  # settled once the move released the study


async def test_move_progress_is_published_as_retrieving_versions() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)

    async def progress(
        study_instance_uid: str, on_progress: Callable[[dicom.MoveProgress], None], cancel: object
    ) -> None:
        on_progress(dicom.MoveProgress(remaining=5, completed=4, failed=0, warning=1))
        await until(lambda: world.jobs.job(KEY).progress is not None)

    world.pacs.on_move = progress
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 10
    await run(world, progress_interval_seconds=0.01)
    assert [(s.status, s.progress.done if s.progress else None) for s in world.statuses][-2:] == [
        ("retrieving", 5),
        ("available", 10),
    ]


async def test_leases_are_renewed_while_a_move_runs() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)

    async def slow(*_: object) -> None:
        await until(lambda: world.jobs.renewals >= 2)

    world.pacs.on_move = slow
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 10
    await run(world, renew_every=dt.timedelta(seconds=0.02))
    assert state(world) == ("available", None)
    # Each beat extends the lease from its own time (the clock is fixed here: NOW + lease) and the transfer's.
    assert world.jobs.rows[KEY].stored.lease_owner is None  # released at the end
    assert world.transfers.transfers[STUDY].verified_instances == 10


def taken_over_during_move(world: World, *, transfer: bool, jobs: bool) -> Callable[..., object]:
    """A move during which worker w2 takes the study's transfer and/or the job over (w1 stalled past its
    lease), then waits until w1's heartbeat cancels it."""

    async def script(study_instance_uid: str, on_progress: object, cancel: threading.Event | None) -> None:
        assert cancel is not None
        until = NOW + dt.timedelta(minutes=1)
        if transfer:
            current = world.transfers.transfers[study_instance_uid]
            world.transfers.transfers[study_instance_uid] = dataclasses.replace(
                current, lease_owner="w2", lease_until=until
            )
        if jobs:
            world.jobs.take_over(KEY, "w2", until)
        await until_set(cancel)
        raise dicom.MoveCancelledError("cancelled")

    return script


async def until_set(event: threading.Event) -> None:
    await until(event.is_set)


@pytest.mark.parametrize(("transfer", "jobs"), [(True, True), (True, False), (False, True)])
async def test_a_lost_lease_cancels_the_move_and_records_nothing(transfer: bool, jobs: bool) -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.on_move = taken_over_during_move(world, transfer=transfer, jobs=jobs)
    lost_before = LEASES_LOST._value.get()
    await run(world, renew_every=dt.timedelta(seconds=0.01))
    assert LEASES_LOST._value.get() == lost_before + 1
    # The attempt's end is not recorded: the job stays as the worker that took it over will report it.
    assert world.jobs.job(KEY).state == "retrieving"
    assert [(s.status, s.attempts) for s in world.statuses] == [("retrieving", 1)]
    if jobs:
        assert world.jobs.rows[KEY].stored.lease_owner == "w2"  # not released by w1
    if transfer:
        assert world.transfers.transfers[STUDY].lease_owner == "w2"


async def test_a_lease_still_held_keeps_the_move_going_when_a_renewal_fails_once() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    renew = world.jobs.renew
    failures = []

    async def flaky(job_keys: list[str], owner: str, until_: dt.datetime) -> int:
        if not failures:
            failures.append(owner)
            raise TransientError("store down")
        return await renew(job_keys, owner, until_)

    world.jobs.renew = flaky  # type: ignore[method-assign]

    async def slow(*_: object) -> None:
        await until(lambda: world.jobs.renewals >= 1 and len(failures) == 1)

    world.pacs.on_move = slow
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 10
    await run(world, renew_every=dt.timedelta(seconds=0.01))
    assert state(world) == ("available", None)


async def test_a_late_report_of_an_attempt_taken_over_changes_nothing() -> None:
    world = World()
    await queued(world)
    stored = await world.jobs.claim_due("w1", NOW, dt.timedelta(seconds=15))
    assert stored is not None
    started, applied = await world.updater.apply(stored, domain.Start(NOW), lease_owner="w1")
    assert applied
    world.jobs.take_over(KEY, "w2", NOW + dt.timedelta(minutes=1))
    after, applied = await world.updater.apply(started, domain.Retry(NOW, domain.PACS_UNREACHABLE), lease_owner="w1")
    assert not applied
    assert (after.job.state, after.lease_owner) == ("retrieving", "w2")


async def test_a_takeover_is_a_new_attempt_published_as_resumed() -> None:
    world = World()
    before = NOW - dt.timedelta(seconds=30)
    await world.jobs.insert(ENROLMENT, STUDY, domain.new_job(before, None, domain.Admit()), before)
    stored = await world.jobs.claim_due("w0", before, dt.timedelta(seconds=15))
    assert stored is not None
    started, _ = await world.updater.apply(stored, domain.Start(before), lease_owner="w0")
    await world.updater.apply(started, domain.Progressed(1, 300), lease_owner="w0")
    # w0 died: its lease ended 15 s ago; w1 takes the job over.
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 10
    assert await run(world) is True
    published = [(s.status, s.attempts, s.reason_code) for s in world.statuses]
    assert published[-2:] == [("retrieving", 2, "resumed"), ("available", 2, None)]
    assert world.statuses[-2].progress is None  # the previous attempt's 1/300 is not shown as current
    assert world.statuses[-2].reason == "reprise après interruption"


async def test_the_worker_loop_survives_a_failed_round_and_runs_the_next_job() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)
    world.pacs.move_result, world.pacs.moved_to_viewer = 10, 10
    world.jobs.fail_claim = RuntimeError("store down")
    worker, stop = retriever(world), asyncio.Event()
    task = asyncio.create_task(worker.loop(stop, poll_seconds=0.01))
    try:
        await until(lambda: state(world)[0] == "available")
    finally:
        stop.set()
        worker.wake.set()
        await task
    assert world.jobs.fail_claim is None
