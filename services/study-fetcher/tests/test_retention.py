"""The retention sweep's order, with in-memory stores (no I/O): the purge of an expired enrolment's studies is
owed before its jobs go, so a sweep cut short at any step leaves nothing in the viewer store that nobody will
delete; a study a live enrolment uses stays; a second sweep finds nothing."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from study_fetcher.cleanup import ViewerCleaner
from study_fetcher.ports import Transfer
from study_fetcher.retention import RetentionSweep

NOW = dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC)
CUTOFF = dt.date(2026, 10, 2)


class CrashError(Exception):
    pass


@dataclass
class StoredJob:
    job_key: str
    study_instance_uid: str


@dataclass
class World:
    """The fetcher's three collections and the viewer store, as plain data."""

    meetings: dict[str, dt.date] = field(default_factory=dict)  # enrolments: id -> meeting date
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> enrolment, uid, state, retired
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> purge_pending, lease_owner
    viewer: set[str] = field(default_factory=set)
    crash_on_delete: bool = False

    def job(self, enrolment_id: str, uid: str, state: str = "available") -> None:
        self.jobs[f"{enrolment_id}|{uid}"] = {"enrolment": enrolment_id, "uid": uid, "state": state, "retired": False}
        self.transfers.setdefault(uid, {"purge_pending": False, "lease_owner": None})


class Enrolments:
    def __init__(self, world: World) -> None:
        self.w = world

    async def expired(self, cutoff: dt.date) -> list[str]:
        return [key for key, day in self.w.meetings.items() if day < cutoff]

    async def forget(self, enrolment_id: str, cutoff: dt.date) -> bool:
        day = self.w.meetings.get(enrolment_id)
        if day is None or day >= cutoff:
            return False
        del self.w.meetings[enrolment_id]
        return True


class Jobs:
    def __init__(self, world: World) -> None:
        self.w = world

    async def retire(self, enrolment_id: str) -> None:
        for job in self.w.jobs.values():
            if job["enrolment"] == enrolment_id:
                job["retired"] = True

    async def of_enrolment(self, enrolment_id: str) -> list[StoredJob]:
        return [StoredJob(key, job["uid"]) for key, job in self.w.jobs.items() if job["enrolment"] == enrolment_id]

    async def delete(self, key: str) -> None:
        if self.w.crash_on_delete:
            raise CrashError
        self.w.jobs.pop(key, None)

    async def live_users(self, uid: str, states: frozenset[str]) -> int:
        return sum(1 for j in self.w.jobs.values() if j["uid"] == uid and j["state"] in states and not j["retired"])

    async def any_of_study(self, uid: str) -> bool:
        return any(job["uid"] == uid for job in self.w.jobs.values())


class Transfers:
    def __init__(self, world: World) -> None:
        self.w = world

    async def request_purge(self, uid: str, now: dt.datetime) -> None:
        self.w.transfers.setdefault(uid, {"lease_owner": None})["purge_pending"] = True

    async def claim(self, uid: str, owner: str, now: dt.datetime, lease: dt.timedelta) -> Transfer | None:
        doc = self.w.transfers.setdefault(uid, {"purge_pending": False, "lease_owner": None})
        doc["lease_owner"] = owner
        return Transfer(uid, owner, now + lease, purge_pending=doc["purge_pending"])

    async def purge_settled(self, uid: str, owner: str) -> None:
        self.w.transfers[uid]["purge_pending"] = False

    async def forget_verification(self, uid: str, owner: str) -> None:
        return None

    async def forget(self, uid: str, owner: str) -> None:
        if not self.w.transfers[uid]["purge_pending"]:
            del self.w.transfers[uid]

    async def release(self, uid: str, owner: str, *, verified_instances: int | None, now: dt.datetime) -> None:
        if uid in self.w.transfers:
            self.w.transfers[uid]["lease_owner"] = None

    async def pending_purges(self, limit: int = 100) -> list[str]:
        return [uid for uid, doc in self.w.transfers.items() if doc.get("purge_pending")]


class Viewer:
    def __init__(self, world: World) -> None:
        self.w = world

    async def delete_study(self, uid: str) -> int:
        present = uid in self.w.viewer
        self.w.viewer.discard(uid)
        return int(present)


def sweep_of(world: World) -> tuple[RetentionSweep, ViewerCleaner]:
    jobs, transfers = Jobs(world), Transfers(world)
    cleaner = ViewerCleaner(
        jobs=jobs,  # type: ignore[arg-type]
        transfers=transfers,  # type: ignore[arg-type]
        purge=Viewer(world),
        owner="me",
        lease=dt.timedelta(seconds=30),
        clock=lambda: NOW,
    )
    sweep = RetentionSweep(
        enrolments=Enrolments(world),  # type: ignore[arg-type]
        jobs=jobs,  # type: ignore[arg-type]
        transfers=transfers,  # type: ignore[arg-type]
        cleaner=cleaner,
        clock=lambda: NOW,
    )
    return sweep, cleaner


def two_enrolments_sharing_a_study() -> World:
    world = World(meetings={"old": dt.date(2026, 9, 1), "live": dt.date(2026, 12, 1)}, viewer={"1.1", "1.2", "1.3"})
    world.job("old", "1.1")  # also available for the live enrolment
    world.job("old", "1.2")  # its own
    world.job("old", "1.3", "removed")  # removed by the DCC without a purge: still in the viewer store
    world.job("live", "1.1")
    return world


async def test_expired_enrolment_goes_with_the_studies_nobody_else_needs() -> None:
    world = two_enrolments_sharing_a_study()
    sweep, _ = sweep_of(world)
    assert await sweep.sweep_expired(CUTOFF) == 1
    assert world.meetings == {"live": dt.date(2026, 12, 1)}
    assert set(world.jobs) == {"live|1.1"}
    assert world.viewer == {"1.1"}
    assert set(world.transfers) == {"1.1"}
    assert not world.transfers["1.1"]["purge_pending"]
    assert await sweep.sweep_expired(CUTOFF) == 0
    assert (set(world.jobs), world.viewer) == ({"live|1.1"}, {"1.1"})


async def test_a_sweep_cut_short_leaves_owed_purges_and_a_rerun_finishes() -> None:
    world = two_enrolments_sharing_a_study()
    sweep, cleaner = sweep_of(world)
    world.crash_on_delete = True
    with pytest.raises(CrashError):
        await sweep.sweep_expired(CUTOFF)
    # The purges were owed before any job went; the retired jobs keep no study for themselves.
    assert {uid for uid, doc in world.transfers.items() if doc["purge_pending"]} == {"1.1", "1.2", "1.3"}
    assert "old" in world.meetings
    await cleaner.settle_owed()  # housekeeping meanwhile: purges what no live job uses
    assert world.viewer == {"1.1"}
    world.crash_on_delete = False
    assert await sweep.sweep_expired(CUTOFF) == 1
    assert set(world.jobs) == {"live|1.1"}
    assert world.viewer == {"1.1"}
    assert set(world.transfers) == {"1.1"}


async def test_the_last_enrolment_of_a_study_takes_it_with_it() -> None:
    world = two_enrolments_sharing_a_study()
    sweep, _ = sweep_of(world)
    await sweep.sweep_expired(CUTOFF)
    assert await sweep.sweep_expired(dt.date(2027, 1, 1)) == 1
    assert (world.meetings, world.jobs, world.transfers, world.viewer) == ({}, {}, {}, set())
