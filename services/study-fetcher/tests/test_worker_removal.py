"""A retrieval whose jobs are all removed while it runs (`study_fetcher.worker.Retriever`), with in-memory stores
and a scripted PACS: removed while MIRC is asked, no C-MOVE is sent at all; a failed read of the jobs by the
removal watch is retried at its next poll, which still cancels the move. No server."""

from __future__ import annotations

import datetime as dt
import threading

from proxymage_shared import dicom
from proxymage_shared.errors import TransientError
from structlog.testing import capture_logs
from study_fetcher import domain
from study_fetcher.ports import StudyPresence
from study_fetcher.worker import MOVES

from .fakes import FakePacs
from .test_handlers import NOW, STUDY, World
from .test_worker import KEY, queued, run, state, until

REMOVED_AT = NOW + dt.timedelta(seconds=1)


async def remove_the_job(world: World) -> None:
    """The DCC removes the study (or the enrolment is withdrawn): the job is removed and a purge owed."""
    stored = await world.jobs.get(KEY)
    assert stored is not None
    await world.updater.apply(stored, domain.Remove(REMOVED_AT))
    await world.transfers.request_purge(STUDY, REMOVED_AT)


class RemovedWhileMircIsAsked(FakePacs):
    """MIRC holds the study, but its answer comes once the job was removed and the removal watch saw it."""

    def __init__(self, world: World) -> None:
        super().__init__(mirc={STUDY: StudyPresence(10)}, move_result=10, moved_to_viewer=10)
        self.world = world

    async def in_mirc(self, study_instance_uid: str) -> StudyPresence | None:
        jobs = self.world.jobs
        await until(lambda: jobs.job(KEY).state == "retrieving")  # the attempt started the job
        await remove_the_job(self.world)
        reads = jobs.reads
        await until(lambda: jobs.reads > reads)  # the watch read the removed job (and asked to cancel)
        return await super().in_mirc(study_instance_uid)


async def test_a_job_removed_while_mirc_is_asked_sends_no_move_and_its_study_is_purged() -> None:
    world = World()
    await queued(world)
    world.purge.held.add(STUDY)  # an earlier copy
    world.pacs = RemovedWhileMircIsAsked(world)
    cancelled = MOVES.labels("cancelled")._value.get()
    assert await run(world, cancel_poll_seconds=0.001) is True
    assert world.pacs.moves == []  # no C-MOVE for a removed job
    assert world.transfers.transfers[STUDY].moves == 0
    assert MOVES.labels("cancelled")._value.get() == cancelled + 1
    assert state(world) == ("removed", None)
    assert [status.status for status in world.statuses] == ["retrieving", "removed"]  # nothing after the removal
    assert world.purge.deleted == [STUDY]  # owed meanwhile, settled once the attempt gave the study back


async def test_a_failed_read_of_the_removal_watch_is_retried_and_the_move_still_cancelled() -> None:
    world = World()
    await queued(world)
    world.pacs.mirc[STUDY] = StudyPresence(10)

    async def removed_during_the_move(study_instance_uid: str, on_progress: object, cancel: object) -> None:
        assert isinstance(cancel, threading.Event)
        await remove_the_job(world)
        world.jobs.fail_get = TransientError("store down")  # the watch's next read fails
        await until(cancel.is_set)
        raise dicom.MoveCancelledError("cancelled")

    world.pacs.on_move = removed_during_the_move
    with capture_logs() as logs:
        await run(world, cancel_poll_seconds=0.001)
    watched = [entry for entry in logs if entry["event"] in ("removal_watch_failed", "move_cancel_requested")]
    assert [entry["event"] for entry in watched] == ["removal_watch_failed", "move_cancel_requested"]
    assert watched[0]["error"] == "TransientError: store down"
    assert world.jobs.fail_get is None
    assert state(world) == ("removed", None)
    assert world.pacs.moves == [STUDY]
    assert world.purge.deleted == [STUDY]
