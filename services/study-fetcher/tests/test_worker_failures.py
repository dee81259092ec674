"""A retrieval attempt (`study_fetcher.worker.Retriever`) whose store or MIRC fails, with in-memory stores and a
scripted PACS: a store failing while the jobs are started ends the attempt with its error, the MIRC query
running beside it cancelled and every lease given back; MIRC failing while an earlier verified copy is recorded
is retried later, the copy neither reused nor moved again. No server."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from proxymage_shared import dicom
from proxymage_shared.errors import TransientError
from study_fetcher.ports import StoredJob, StudyPresence, Transfer

from .fakes import FakePacs
from .test_handlers import NOW, STUDY, World
from .test_worker import KEY, queued, run, state


class MircNeverAnswers(FakePacs):
    async def in_mirc(self, study_instance_uid: str) -> StudyPresence | None:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def probes() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if "_probe" in getattr(task.get_coro(), "__qualname__", "")]


async def test_a_store_failing_while_the_jobs_are_started_ends_the_attempt_and_gives_everything_back() -> None:
    world = World()
    await queued(world)
    world.pacs = pacs = MircNeverAnswers()

    def failing_start(stored: StoredJob) -> None:
        if stored.lease_owner == "w1":
            world.jobs.before_save = None
            raise TransientError("store down")

    world.jobs.before_save = failing_start
    with pytest.raises(TransientError, match="store down"):
        await asyncio.wait_for(run(world), 5)
    assert probes() == []  # the MIRC query started beside the jobs' start was cancelled with the attempt
    assert pacs.moves == []
    assert state(world) == ("queued", None)
    assert world.jobs.rows[KEY].stored.lease_owner is None
    assert world.transfers.transfers[STUDY].lease_owner is None


async def test_mirc_failing_while_a_verified_copy_is_recorded_is_retried_without_reusing_or_moving() -> None:
    world = World()
    await queued(world)
    world.transfers.transfers[STUDY] = Transfer(STUDY, None, NOW - dt.timedelta(hours=1), verified_instances=10)
    world.pacs.mirc[STUDY] = dicom.DicomUnavailableError("MIRC down")
    world.pacs.viewer[STUDY] = StudyPresence(10)  # the viewer store still holds the copy
    await run(world)
    assert state(world) == ("not_yet_available", "pacs_unreachable")
    assert world.pacs.moves == []
    assert world.transfers.transfers[STUDY].verified_instances == 10  # kept for the next attempt
