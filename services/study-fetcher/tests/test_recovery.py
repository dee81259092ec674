"""Recovery follows the peer (`study_fetcher.recovery`): the probes' states, the jobs brought forward when a
peer answers again (only those waiting for it), a recovery that fails and is tried again. No server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest
from proxymage_shared.dicom import DicomUnavailableError
from proxymage_shared.errors import TransientError
from proxymage_shared.reasons import Reason
from structlog.testing import capture_logs
from study_fetcher import domain
from study_fetcher.ports import job_key_of
from study_fetcher.recovery import RECHECKS, PeerRecovery, PeerStates, PeerWatch

from .test_handlers import ENROLMENT, NOW, World

SPREAD = 5.0


def test_a_peer_is_recovered_at_its_return_then_for_a_few_probes_only() -> None:
    states = PeerStates()
    assert states.should_recover("mirc", answers=True)  # unknown at start: jobs may wait from before
    assert not states.should_recover("mirc", answers=False)
    states.record("mirc", answers=True, recovered=True)
    for _ in range(RECHECKS):  # stragglers: attempts that began before the return and end after it
        assert states.should_recover("mirc", answers=True)
        states.record("mirc", answers=True, recovered=True)
    assert not states.should_recover("mirc", answers=True)
    states.record("mirc", answers=True)
    assert not states.should_recover("mirc", answers=True)
    states.record("mirc", answers=False)
    assert not states.should_recover("mirc", answers=False)
    assert states.should_recover("mirc", answers=True)
    # A recovery that failed records nothing: the next probe is a return again.
    assert states.should_recover("mirc", answers=True)
    states.record("mirc", answers=True, recovered=True)
    assert states.owed["mirc"] == RECHECKS
    assert states.should_recover("viewer", answers=True)  # each peer on its own


async def waiting_job(world: World, uid: str, reason: Reason | None) -> str:
    """A job of `uid` that tried once (at NOW) and waits with `reason` (None: queued, never tried)."""
    job = domain.new_job(NOW - dt.timedelta(minutes=5), None, domain.Admit())
    if reason is not None:
        policy = domain.RetrievalPolicy()
        for event in (domain.Start(NOW), domain.Retry(NOW, reason)):
            changed = domain.transition(job, event, policy)
            assert changed is not None
            job = changed
        job = dataclasses.replace(job, next_attempt_at=NOW + dt.timedelta(minutes=30))  # a late backoff slot
    await world.jobs.insert(ENROLMENT, uid, job, NOW)
    return job_key_of(ENROLMENT, uid)


def recovery(world: World) -> PeerRecovery:
    return PeerRecovery(
        jobs=world.jobs, updater=world.updater, spread_seconds=SPREAD, clock=lambda: NOW, rng=random.Random(5)
    )


async def test_only_the_jobs_waiting_for_the_peer_that_is_back_are_brought_forward_and_published() -> None:
    world = World()
    mirc_a = await waiting_job(world, "1.1", domain.PACS_UNREACHABLE)
    mirc_b = await waiting_job(world, "1.2", domain.PACS_UNREACHABLE)
    viewer = await waiting_job(world, "1.3", domain.VIEWER_UNREACHABLE)
    absent = await waiting_job(world, "1.4", domain.NOT_IN_MIRC)
    fresh = await waiting_job(world, "1.5", None)
    assert await recovery(world).peer_back("mirc") == 2
    for key in (mirc_a, mirc_b):
        row = world.jobs.rows[key]
        assert row.stored.job.reason_code == "pacs_back"
        assert row.due_at is not None
        assert NOW <= row.due_at <= NOW + dt.timedelta(seconds=SPREAD)
        assert row.due_at == row.stored.job.next_attempt_at
    for key, code in ((viewer, "viewer_unreachable"), (absent, "not_in_mirc"), (fresh, None)):
        assert world.jobs.job(key).reason_code == code
    assert world.jobs.rows[viewer].due_at == NOW + dt.timedelta(minutes=30)
    published = {(s.study_instance_uid, s.status, s.reason_code) for s in world.statuses}
    assert published == {("1.1", "not_yet_available", "pacs_back"), ("1.2", "not_yet_available", "pacs_back")}
    assert all(s.next_attempt_at is not None and s.next_attempt_at <= NOW + dt.timedelta(seconds=SPREAD)
               for s in world.statuses)  # fmt: skip
    # Done once: a second recovery (another instance, the next probe) finds nothing left waiting.
    assert await recovery(world).peer_back("mirc") == 0
    assert await recovery(world).peer_back("viewer") == 1


class Probe:
    """A peer that answers as scripted: True, False, or an exception to raise."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def watch(world: World, **probes: Probe) -> PeerWatch:
    def wake() -> None:
        world.wakes += 1

    return PeerWatch(probes, recovery(world), wake, lambda: NOW)


async def test_a_peer_back_after_an_outage_brings_its_jobs_forward_and_wakes_the_workers() -> None:
    world = World()
    key = await waiting_job(world, "1.1", domain.PACS_UNREACHABLE)
    peers = watch(world, mirc=Probe(DicomUnavailableError("down"), False, True))
    await peers.probe_once()
    await peers.probe_once()
    assert world.jobs.job(key).reason_code == "pacs_unreachable"  # still down: nothing moves
    assert world.wakes == 0
    await peers.probe_once()
    assert world.jobs.job(key).reason_code == "pacs_back"
    assert world.wakes == 1


async def test_stragglers_of_a_return_are_brought_forward_then_the_backoff_rules_again() -> None:
    world = World()
    probe = Probe(True)
    peers = watch(world, mirc=probe)
    await peers.probe_once()  # the first answer: whatever waited from before start is brought forward
    straggler = await waiting_job(world, "1.1", domain.PACS_UNREACHABLE)  # an attempt that ended after it
    await peers.probe_once()
    assert world.jobs.job(straggler).reason_code == "pacs_back"
    for _ in range(RECHECKS):
        await peers.probe_once()
    later = await waiting_job(world, "1.2", domain.PACS_UNREACHABLE)  # a failure no probe saw an outage for
    await peers.probe_once()
    assert probe.calls == RECHECKS + 3
    assert world.jobs.job(later).reason_code == "pacs_unreachable"  # keeps its backoff
    assert world.wakes == 1


async def test_a_recovery_that_fails_is_tried_again_at_the_next_probe() -> None:
    world = World()
    key = await waiting_job(world, "1.1", domain.PACS_UNREACHABLE)
    world.jobs.fail_waiting = TransientError("store down")
    peers = watch(world, mirc=Probe(False, True))
    await peers.probe_once()
    with pytest.raises(TransientError):
        await peers.probe_once()
    assert world.jobs.job(key).reason_code == "pacs_unreachable"
    await peers.probe_once()
    assert world.jobs.job(key).reason_code == "pacs_back"
    assert world.wakes == 1


async def test_each_peer_is_recovered_on_its_own() -> None:
    world = World()
    mirc = await waiting_job(world, "1.1", domain.PACS_UNREACHABLE)
    viewer = await waiting_job(world, "1.2", domain.VIEWER_UNREACHABLE)
    peers = watch(world, mirc=Probe(False), viewer=Probe(False, True))
    await peers.probe_once()
    await peers.probe_once()
    assert world.jobs.job(viewer).reason_code == "viewer_back"
    assert world.jobs.job(mirc).reason_code == "pacs_unreachable"


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() -> None:
    world = World()
    await waiting_job(world, "1.1", domain.PACS_UNREACHABLE)
    peers = watch(world, mirc=Probe(DicomUnavailableError("down"), False, DicomUnavailableError("down"), True))
    with capture_logs() as logs:
        for _ in range(4):
            await peers.probe_once()
    told = [entry for entry in logs if entry["event"].startswith("peer")]
    assert [(entry["event"], entry.get("jobs_brought_forward")) for entry in told] == [
        ("peer_unreachable", None),
        ("peer_back", 1),
    ]
    assert told[0]["error"] == "DicomUnavailableError: down"
    assert told[1]["down_seconds"] == 0  # the test's clock stands still
