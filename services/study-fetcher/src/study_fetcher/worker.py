"""Retrieval workers: claim a due job, move its study MIRC -> viewer store once for every job waiting for it,
verify, record and publish the outcome.

One attempt, for the study S of a claimed job:
1. claim S's transfer (lease): if another worker is moving S, give the job back until that move ends;
2. claim every other unheld job waiting for S (other enrolments), start them all (`retrieving`);
3. meanwhile (the probe, concurrent with those writes): study-level C-FIND on MIRC: absent -> `not yet in
   MIRC`; MIRC's instance count is the target; if an earlier verified move of S is recorded, a study-level
   C-FIND on the viewer store at the same time: if it still holds all of S, available without a move;
4. otherwise C-MOVE S to the viewer store (progress from the pending responses, throttled), then a
   study-level C-FIND on the viewer store: `available` only if no sub-operation failed and the viewer store
   holds at least MIRC's instance count (domain.assess_move);
5. record the outcome for every job of the attempt, release the leases, wake jobs that waited for S.

The time from a selection to `available` is the move's plus what surrounds it, so the steps before the move
overlap where they can (writes and queries at once; one idle worker woken per wake-up, `wakeups.py`), and a
worker starting a move hands the search for more due work to another idle worker.

Leases are short (`lease`, 15 s by default) and renewed by a heartbeat beside the move (every `renew_every`),
each renewal conditional on the lease's owner: a worker that dies loses them within `lease` and another instance
takes the jobs over (a new attempt, published with the reason "reprise après interruption"). A worker whose
renewal finds that another took the study or its jobs over (it stalled past its lease) cancels its move and
records nothing: its reports are fenced by the lease owner (`JobChanges.apply(lease_owner=...)`). All job
writes are conditional (ports.JobRepository.save), so a removal during a move wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter, Histogram
from proxymage_shared.dicom import (
    DicomPermanentError,
    DicomTransientError,
    DicomUnavailableError,
    IncompleteMoveError,
    MoveCancelledError,
    MoveProgress,
)
from proxymage_shared.dicom.status import classify
from proxymage_shared.errors import ProxymageError, describe
from proxymage_shared.events import utc_now
from proxymage_shared.idempotency import to_ms
from proxymage_shared.logging import OUTAGES, get_logger
from proxymage_shared.reasons import Reason

from study_fetcher import domain
from study_fetcher.ports import (
    Clock,
    JobChanges,
    JobRepository,
    MoveControl,
    Pacs,
    StoredJob,
    StudyPresence,
    Transfer,
    TransferRepository,
    ViewerCleanup,
)
from study_fetcher.wakeups import WakeUps

log = get_logger(__name__)

MOVES: Final = Counter(
    "proxymage_fetcher_moves_total",
    "Study transfers: C-MOVEs started (moved), earlier verified moves reused (reused), moves cancelled.",
    ["kind"],
)
ATTEMPTS: Final = Counter("proxymage_fetcher_attempts_total", "Retrieval attempts, by outcome state.", ["outcome"])
LEASES_LOST: Final = Counter(
    "proxymage_fetcher_leases_lost_total", "Attempts abandoned because another worker took their study over."
)
ATTEMPT_SECONDS: Final = Histogram(
    "proxymage_fetcher_attempt_seconds",
    "Duration of one retrieval attempt (claim to recorded outcome), by outcome.",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """The workers' timings; their defaults and meanings are those of `study_fetcher.settings.Settings`."""

    lease: dt.timedelta
    renew_every: dt.timedelta  # the heartbeat's period, well below `lease`
    transfer_wait: dt.timedelta
    progress_interval_seconds: float
    cancel_poll_seconds: float  # how often a running move checks that its jobs still want it


def _incomplete(error: IncompleteMoveError) -> domain.MoveReport:
    """What an incomplete move delivered; at least one failure (a "warning" ending with none failed is not
    complete either)."""
    return domain.MoveReport(completed=error.result.completed, failed=max(error.result.failed, 1))


class Retriever:
    def __init__(
        self,
        *,
        jobs: JobRepository,
        transfers: TransferRepository,
        updater: JobChanges,
        pacs: Pacs,
        options: WorkerOptions,
        owner: str,
        cleaner: ViewerCleanup | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._jobs = jobs
        self._transfers = transfers
        self._updater = updater
        self._pacs = pacs
        self._options = options
        self._owner = owner
        self._cleaner = cleaner
        self._clock = clock
        # Wakes one idle worker of this instance (handlers, peer watch): `wake.set()`.
        self.wake = WakeUps()

    def _now(self) -> dt.datetime:
        return to_ms(self._clock())

    async def run_once(self) -> bool:
        """Runs one due job (with every job waiting for the same study); False when none is due."""
        now = self._now()
        claimed = await self._jobs.claim_due(self._owner, now, self._options.lease)
        if claimed is None:
            return False
        study_instance_uid = claimed.study_instance_uid
        transfer = await self._transfers.claim(study_instance_uid, self._owner, now, self._options.lease)
        if transfer is None:
            # Another worker is moving this study for another enrolment: its end wakes this job.
            await self._jobs.postpone(claimed.job_key, self._owner, now + self._options.transfer_wait)
            return True
        job_keys = [claimed.job_key]
        verified: int | None = None
        abandoned = False
        try:
            companions = await self._jobs.claim_companions(study_instance_uid, self._owner, now, self._options.lease)
            members = [claimed, *companions]
            job_keys = [member.job_key for member in members]
            verified, abandoned = await self._attempt(study_instance_uid, members, transfer)
        finally:
            released_at = self._now()
            await self._jobs.release(job_keys, self._owner)
            await self._transfers.release(study_instance_uid, self._owner, verified_instances=verified, now=released_at)
            await self._jobs.wake_waiters(study_instance_uid, released_at)
        if abandoned and self._cleaner is not None:
            # Every job was removed during the attempt (withdrawal, corrected identity...): the purge owed
            # meanwhile could not run while this move held the study; it runs now if nobody needs the study.
            await self._cleaner.settle(study_instance_uid)
        return True

    async def _attempt(
        self, study_instance_uid: str, members: list[StoredJob], transfer: Transfer
    ) -> tuple[int | None, bool]:
        """Runs the attempt; returns the verified instance count (None unless verified) and whether every job
        ended removed (the result is discarded: whatever reached the viewer store must be purged)."""
        started = time.perf_counter()
        # The peers are asked while the jobs are started: a job removed meanwhile only costs a study-level
        # C-FIND by UID, as a removal arriving just after the start would.
        probe = asyncio.create_task(self._probe(study_instance_uid, transfer))
        latest: dict[str, StoredJob] = {}
        try:
            for member in members:
                stored, applied = await self._updater.apply(member, domain.Start(self._now()), lease_owner=self._owner)
                if applied:
                    latest[member.job_key] = stored
        except BaseException:
            await _discard(probe)
            raise
        if not latest:
            await _discard(probe)
            return None, False  # removed (or taken) meanwhile: nothing was moved
        cancel, lost = threading.Event(), asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(study_instance_uid, list(latest), cancel, lost))
        watcher = asyncio.create_task(self._watch_removal(list(latest), cancel))
        try:
            outcome = await self._retrieve(study_instance_uid, probe, latest, cancel)
        finally:
            for task in (heartbeat, watcher, probe):
                await _discard(task)
        if lost.is_set():
            # Another worker runs the study now: whatever this attempt saw is not for us to record.
            ATTEMPTS.labels("abandoned").inc()
            log.warning("retrieval_abandoned", study_instance_uid=study_instance_uid, jobs=len(latest))
            return None, False
        for job_key, stored in list(latest.items()):
            latest[job_key], _ = await self._updater.apply(stored, outcome, lease_owner=self._owner)
        name = type(outcome).__name__.lower()
        ATTEMPTS.labels(name).inc()
        ATTEMPT_SECONDS.labels(name).observe(time.perf_counter() - started)
        log.info(
            "retrieval_attempt",
            study_instance_uid=study_instance_uid,
            jobs=len(latest),
            outcome=name,
            reason=outcome.reason.code if isinstance(outcome, domain.Retry | domain.Refused) else None,
            seconds=round(time.perf_counter() - started, 3),
        )
        abandoned = all(stored.job.state == "removed" for stored in latest.values())
        return (outcome.instances if isinstance(outcome, domain.Verified) else None), abandoned

    async def _watch_removal(self, job_keys: list[str], cancel: threading.Event) -> None:
        """Cancels the running move once every job it serves is removed (consent or enrolment withdrawn,
        corrected identity, DCC removal): nothing is moved on behalf of an enrolment that no longer wants it."""
        while True:
            await asyncio.sleep(self._options.cancel_poll_seconds)
            try:
                # One read by `_id` per job: indexed on every backend (an `$in` is a scan on FerretDB v1).
                states = [
                    stored.job.state for job_key in job_keys if (stored := await self._jobs.get(job_key)) is not None
                ]
            except Exception as error:  # the next poll tries again
                log.warning("removal_watch_failed", error=describe(error))
                continue
            if states and all(state == "removed" for state in states):
                cancel.set()
                log.info("move_cancel_requested", jobs=len(job_keys))
                return

    async def _in_mirc(self, study_instance_uid: str) -> StudyPresence | domain.Retry:
        try:
            in_mirc = await self._pacs.in_mirc(study_instance_uid)
        except DicomUnavailableError:
            return domain.Retry(self._now(), domain.PACS_UNREACHABLE)
        except ProxymageError as error:
            return domain.Retry(self._now(), Reason.of("pacs_error", describe(error)))
        return in_mirc if in_mirc is not None else domain.Retry(self._now(), domain.NOT_IN_MIRC)

    async def _in_viewer(self, study_instance_uid: str) -> int | None:
        """The viewer store's instance count of the study; None when absent, uncounted or not answering."""
        try:
            in_viewer = await self._pacs.in_viewer(study_instance_uid)
        except ProxymageError:
            return None
        return in_viewer.instances if in_viewer is not None else None

    async def _probe(self, study_instance_uid: str, transfer: Transfer) -> StudyPresence | domain.Outcome:
        """What MIRC holds of the study (the move's target), or the attempt's outcome without a move: not in
        MIRC (or MIRC failing), or an earlier verified move the viewer store still fully holds (both peers are
        asked at once)."""
        if transfer.verified_instances is None:
            return await self._in_mirc(study_instance_uid)
        in_mirc, in_viewer = await asyncio.gather(
            self._in_mirc(study_instance_uid), self._in_viewer(study_instance_uid)
        )
        if isinstance(in_mirc, domain.Retry):
            return in_mirc
        reused = domain.assess_reuse(transfer.verified_instances, in_mirc.instances, in_viewer)
        if reused is not None:
            MOVES.labels("reused").inc()
            return reused
        return in_mirc

    async def _retrieve(
        self,
        study_instance_uid: str,
        probe: asyncio.Task[StudyPresence | domain.Outcome],
        latest: dict[str, StoredJob],
        cancel: threading.Event,
    ) -> domain.Outcome:
        in_mirc = await probe
        if not isinstance(in_mirc, StudyPresence):
            return in_mirc

        if cancel.is_set():  # every job removed, or the lease lost, while MIRC was asked: do not start the move
            MOVES.labels("cancelled").inc()
            return domain.Retry(self._now(), Reason.of("move_failed", "transfert annulé"))  # applies to no job
        # This worker is busy for the move's duration: another idle one looks for more due work meanwhile.
        self.wake.set()

        async def started() -> None:
            # Counted (and an earlier verification forgotten: the copy is being rewritten) when the C-MOVE is
            # about to be sent, not when MIRC's budget stayed full and nothing was sent.
            await self._transfers.count_move(study_instance_uid, self._owner, self._now())
            MOVES.labels("moved").inc()

        progress = _ProgressRelay(self._updater, latest, self._options.progress_interval_seconds, self._owner)
        relay = asyncio.create_task(progress.run())
        try:
            completed = await self._pacs.move(study_instance_uid, progress.report, MoveControl(cancel, started))
        except MoveCancelledError:
            MOVES.labels("cancelled").inc()
            return domain.Retry(self._now(), Reason.of("move_failed", "transfert annulé"))  # applies to no job
        except IncompleteMoveError as error:
            return domain.assess_move(_incomplete(error), in_mirc.instances, None, self._now())
        except DicomPermanentError as error:
            meaning = classify(error.status)[1] if error.status is not None else describe(error)
            return domain.Refused(Reason.of("move_refused", meaning))
        except DicomUnavailableError:
            return domain.Retry(self._now(), domain.PACS_UNREACHABLE)
        except DicomTransientError as error:
            status = f"statut 0x{error.status:04X}" if error.status is not None else None
            return domain.Retry(self._now(), Reason.of("move_failed", status))
        except ProxymageError as error:
            return domain.Retry(self._now(), Reason.of("move_failed", describe(error)))
        finally:
            await progress.close(relay)

        try:
            in_viewer = await self._pacs.in_viewer(study_instance_uid)
        except ProxymageError:
            return domain.Retry(self._now(), domain.VIEWER_UNREACHABLE)
        return domain.assess_move(
            domain.MoveReport(completed=completed, failed=0),
            in_mirc.instances,
            in_viewer.instances if in_viewer is not None else None,
            self._now(),
        )

    async def _heartbeat(
        self, study_instance_uid: str, job_keys: list[str], cancel: threading.Event, lost: asyncio.Event
    ) -> None:
        """Renews the leases of the attempt every `renew_every`, conditionally on this worker owning them. When
        another worker holds the study's transfer, or every job, now (this one stalled past its lease), sets
        `lost` and cancels the move: two workers never go on moving the same study."""
        period = self._options.renew_every.total_seconds()
        while True:
            await asyncio.sleep(period)
            until = self._now() + self._options.lease
            try:
                jobs_held = await self._jobs.renew(job_keys, self._owner, until)
                transfer_held = await self._transfers.renew(study_instance_uid, self._owner, until)
            except Exception as error:  # the next beat tries again; the lease may lapse meanwhile
                log.warning("lease_renewal_failed", study_instance_uid=study_instance_uid, error=describe(error))
                continue
            if not transfer_held or jobs_held == 0:
                LEASES_LOST.inc()
                log.warning(
                    "lease_lost", study_instance_uid=study_instance_uid, jobs_held=jobs_held, transfer=transfer_held
                )
                lost.set()
                cancel.set()
                return

    async def loop(self, stop: asyncio.Event, poll_seconds: float) -> None:
        """One worker: runs due jobs back to back, else waits for a wake-up (a handler) or the next poll."""
        while not stop.is_set():
            try:
                busy = await self.run_once()
            except Exception as error:  # MongoDB down: one outage, logged once and reminded, not every poll
                OUTAGES.down("retrieval_round", describe(error))
                busy = False
            else:
                OUTAGES.up("retrieval_round")
            if busy:
                continue
            await self.wake.wait(poll_seconds)


async def _discard(task: asyncio.Task[object]) -> None:
    """Cancels `task` (if still running) and waits for it to end; its result or error is not wanted."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class _ProgressRelay:
    """Turns the move's pending responses into `retrieving` versions with progress, at most one per interval."""

    def __init__(
        self, updater: JobChanges, latest: dict[str, StoredJob], interval_seconds: float, lease_owner: str
    ) -> None:
        self._updater = updater
        self._latest = latest
        self._interval = interval_seconds
        self._lease_owner = lease_owner
        self._progress: MoveProgress | None = None
        self._signal = asyncio.Event()
        self._finished = asyncio.Event()

    def report(self, progress: MoveProgress) -> None:
        """Called on the event loop for each pending C-MOVE response."""
        self._progress = progress
        self._signal.set()

    async def run(self) -> None:
        while True:
            await self._signal.wait()
            self._signal.clear()
            if self._finished.is_set():
                return
            progress = self._progress
            if progress is not None:
                done = progress.completed + progress.warning
                for job_key, stored in list(self._latest.items()):
                    self._latest[job_key], _ = await self._updater.apply(
                        stored, domain.Progressed(done, progress.total), lease_owner=self._lease_owner
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), self._interval)

    async def close(self, task: asyncio.Task[None]) -> None:
        """Stops the relay after the update in flight (never mid-write), so the final state comes last."""
        self._finished.set()
        self._signal.set()
        try:
            await task
        except Exception as error:
            log.warning("progress_update_failed", error=describe(error))
