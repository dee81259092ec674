"""The viewer store's purges (`study_fetcher.cleanup.ViewerCleaner`) with in-memory stores: a purge the viewer
store cannot do now, or one a running move keeps from running, stays owed (the study's lease given back) and
housekeeping does it later; a study a live job uses is kept. No server."""

from __future__ import annotations

import datetime as dt

import pytest
from study_fetcher import domain
from study_fetcher.pacs import ViewerStoreUnavailableError
from study_fetcher.ports import Transfer

from .test_handlers import ENROLMENT, NOW, STUDY, World


def moved_once(world: World) -> None:
    """STUDY was moved and verified earlier; the viewer store holds it; no job refers to it any more."""
    world.transfers.transfers[STUDY] = verified(None, NOW - dt.timedelta(hours=1))
    world.purge.held.add(STUDY)


def verified(lease_owner: str | None, lease_until: dt.datetime) -> Transfer:
    return Transfer(STUDY, lease_owner, lease_until, moves=1, verified_instances=10, verified_at=NOW)


@pytest.mark.parametrize("error", [ViewerStoreUnavailableError("viewer store down"), TimeoutError()])
async def test_a_purge_the_viewer_store_cannot_do_now_stays_owed_until_housekeeping(error: Exception) -> None:
    world = World()
    moved_once(world)
    world.purge.error = error
    await world.cleaner.request(STUDY)
    transfer = world.transfers.transfers[STUDY]
    assert transfer.purge_pending is True  # still owed
    assert transfer.lease_owner is None  # the study is free again for a move or another try
    assert transfer.verified_instances == 10  # the copy is still there: its verification is not forgotten
    assert world.purge.held == {STUDY}
    world.purge.error = None  # the viewer store is back
    assert await world.cleaner.settle_owed() == 1
    assert world.purge.deleted == [STUDY]
    assert world.purge.held == set()
    assert STUDY not in world.transfers.transfers  # purged, and no job refers to it: forgotten


async def test_a_purge_owed_while_a_move_holds_the_study_waits_for_the_move_to_end() -> None:
    world = World()
    moved_once(world)
    world.transfers.transfers[STUDY] = verified("worker-2", NOW + dt.timedelta(seconds=10))  # moving it again
    await world.cleaner.request(STUDY)
    assert world.purge.deleted == []
    assert world.transfers.transfers[STUDY].purge_pending is True
    assert world.transfers.transfers[STUDY].lease_owner == "worker-2"  # untouched
    await world.transfers.release(STUDY, "worker-2", verified_instances=None, now=NOW)
    await world.cleaner.settle_owed()
    assert world.purge.deleted == [STUDY]


async def test_a_study_a_live_job_uses_is_kept_and_the_purge_no_longer_owed() -> None:
    world = World()
    moved_once(world)
    await world.jobs.insert("enr-2", STUDY, domain.new_job(NOW, None, domain.Admit()), NOW)
    await world.cleaner.request(STUDY)
    assert world.purge.deleted == []
    transfer = world.transfers.transfers[STUDY]
    assert (transfer.purge_pending, transfer.lease_owner, transfer.verified_instances) == (False, None, 10)


async def test_a_purged_study_another_job_still_refers_to_keeps_its_transfer_without_verification() -> None:
    world = World()
    moved_once(world)
    stored = await world.jobs.insert(ENROLMENT, STUDY, domain.new_job(NOW, None, domain.Admit()), NOW)
    assert stored is not None
    await world.updater.apply(stored, domain.Remove(NOW))  # removed by the DCC: no longer a live user
    assert world.state()[0] == "removed"
    await world.cleaner.request(STUDY)
    assert world.purge.deleted == [STUDY]
    transfer = world.transfers.transfers[STUDY]
    assert (transfer.purge_pending, transfer.verified_instances) == (False, None)  # a later move starts afresh


async def test_a_settle_finding_no_purge_owed_deletes_nothing_and_gives_the_study_back() -> None:
    world = World()
    moved_once(world)  # no purge owed (or another instance settled it meanwhile)
    await world.cleaner.settle(STUDY)
    assert world.purge.deleted == []
    transfer = world.transfers.transfers[STUDY]
    assert (transfer.purge_pending, transfer.lease_owner, transfer.verified_instances) == (False, None, 10)
