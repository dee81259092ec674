"""The retention sweep's order, with the in-memory stores of tests/fakes.py (no I/O): the purge of an expired
enrolment's studies is owed before its jobs go, so a sweep cut short at any step leaves nothing in the viewer
store that nobody will delete; a study a live enrolment uses stays; a second sweep finds nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import pytest
from study_fetcher import domain
from study_fetcher.cleanup import ViewerCleaner
from study_fetcher.ports import Transfer, job_key_of
from study_fetcher.retention import RetentionSweep
from study_fetcher.store import FREE

from .fakes import FakeEnrolmentStore, FakeJobStore, FakePurge, FakeTransferStore

NOW = dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC)
CUTOFF = dt.date(2026, 10, 2)


class CrashError(Exception):
    pass


@dataclass
class World:
    """The fetcher's three collections and the viewer store."""

    enrolments: FakeEnrolmentStore = field(default_factory=FakeEnrolmentStore)
    jobs: FakeJobStore = field(default_factory=FakeJobStore)
    transfers: FakeTransferStore = field(default_factory=FakeTransferStore)
    viewer: FakePurge = field(default_factory=FakePurge)

    def enrolment(self, enrolment_id: str, meeting_date: dt.date) -> None:
        self.enrolments.docs[enrolment_id] = {"_id": enrolment_id, "meeting_date": meeting_date.isoformat()}

    async def job(self, enrolment_id: str, uid: str, state: domain.State = "available") -> None:
        """A job of the study in `state`; the study was moved to the viewer store once."""
        job = dataclasses.replace(domain.new_job(NOW, None, domain.Admit()), state=state)
        await self.jobs.insert(enrolment_id, uid, job, NOW)
        self.transfers.transfers.setdefault(uid, Transfer(uid, None, FREE, moves=1, verified_instances=10))
        self.viewer.held.add(uid)

    def state(self) -> tuple[set[str], set[str], set[str], set[str]]:
        """The enrolments, the jobs, the studies with a transfer and those the viewer store holds."""
        return set(self.enrolments.docs), set(self.jobs.rows), set(self.transfers.transfers), self.viewer.held

    def owed(self) -> set[str]:
        return {uid for uid, transfer in self.transfers.transfers.items() if transfer.purge_pending}


def sweep_of(world: World) -> tuple[RetentionSweep, ViewerCleaner]:
    cleaner = ViewerCleaner(
        jobs=world.jobs,
        transfers=world.transfers,
        purge=world.viewer,
        owner="me",
        lease=dt.timedelta(seconds=30),
        clock=lambda: NOW,
    )
    sweep = RetentionSweep(
        enrolments=world.enrolments, jobs=world.jobs, transfers=world.transfers, cleaner=cleaner, clock=lambda: NOW
    )
    return sweep, cleaner


async def two_enrolments_sharing_a_study() -> World:
    world = World()
    world.enrolment("old", dt.date(2026, 9, 1))
    world.enrolment("live", dt.date(2026, 12, 1))
    await world.job("old", "1.1")  # also available for the live enrolment
    await world.job("old", "1.2")  # its own
    await world.job("old", "1.3", "removed")  # removed by the DCC without a purge: still in the viewer store
    await world.job("live", "1.1")
    return world


LIVE_JOB = job_key_of("live", "1.1")


async def test_expired_enrolment_goes_with_the_studies_nobody_else_needs() -> None:
    world = await two_enrolments_sharing_a_study()
    sweep, _ = sweep_of(world)
    assert await sweep.sweep_expired(CUTOFF) == 1
    assert world.state() == ({"live"}, {LIVE_JOB}, {"1.1"}, {"1.1"})
    assert world.owed() == set()
    assert await sweep.sweep_expired(CUTOFF) == 0
    assert world.state() == ({"live"}, {LIVE_JOB}, {"1.1"}, {"1.1"})


async def test_a_sweep_cut_short_leaves_owed_purges_and_a_rerun_finishes() -> None:
    world = await two_enrolments_sharing_a_study()
    sweep, cleaner = sweep_of(world)
    world.jobs.fail_delete = CrashError()
    with pytest.raises(CrashError):
        await sweep.sweep_expired(CUTOFF)
    # The purges were owed before any job went; the retired jobs keep no study for themselves.
    assert world.owed() == {"1.1", "1.2", "1.3"}
    assert "old" in world.enrolments.docs
    await cleaner.settle_owed()  # housekeeping meanwhile: purges what no live job uses
    assert world.viewer.held == {"1.1"}
    world.jobs.fail_delete = None
    assert await sweep.sweep_expired(CUTOFF) == 1
    assert world.state() == ({"live"}, {LIVE_JOB}, {"1.1"}, {"1.1"})


async def test_the_last_enrolment_of_a_study_takes_it_with_it() -> None:
    world = await two_enrolments_sharing_a_study()
    sweep, _ = sweep_of(world)
    await sweep.sweep_expired(CUTOFF)
    assert await sweep.sweep_expired(dt.date(2027, 1, 1)) == 1
    assert world.state() == (set(), set(), set(), set())
