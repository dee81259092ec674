"""Retention (CONTRACT v1.1): what the fetcher holds about an enrolment goes `retention_days` after its meeting.

For each enrolment whose meeting date (from `identity.resolved.v1`, on its `enrolments` document) is before
the cutoff, in this order, each step safe to repeat:
1. its jobs are *retired*: they stop counting as users of their studies and no worker starts them again;
2. a purge of each of their studies is owed, durably (`transfers.purge_pending`), before the jobs that say
   the study was moved are deleted: a crash in between leaves an owed purge that housekeeping runs;
3. the jobs are deleted by `_id`;
4. each owed purge is tried (`ViewerCleanup.settle`, the withdrawal's rule): the study leaves the viewer store
   unless a live job of another enrolment (not retired, not removed or failed) still uses it; once purged
   and referred to by no job, its transfer document is deleted too; a purge that cannot run now (viewer
   store down, a move holding the study) stays owed for housekeeping;
5. the enrolment's document (identity, linked patients, catalogue, what was handled) is deleted, on
   condition that its meeting is still past. Until then a re-run of the sweep finds the enrolment again and
   repeats what is left.

Several replicas may sweep at once: every write is by `_id` or conditional, and a second sweep finds nothing.
"""

from __future__ import annotations

import datetime as dt

from proxymage_shared.logging import get_logger

from study_fetcher.ports import Clock, EnrolmentRepository, JobRepository, TransferRepository, ViewerCleanup

log = get_logger(__name__)


class RetentionSweep:
    def __init__(
        self,
        *,
        enrolments: EnrolmentRepository,
        jobs: JobRepository,
        transfers: TransferRepository,
        cleaner: ViewerCleanup,
        clock: Clock,
    ) -> None:
        self._enrolments = enrolments
        self._jobs = jobs
        self._transfers = transfers
        self._cleaner = cleaner
        self._clock = clock

    async def sweep_expired(self, cutoff: dt.date) -> int:
        """Deletes everything about the enrolments whose meeting is before `cutoff`; returns how many."""
        removed = 0
        for enrolment_id in await self._enrolments.expired(cutoff):
            removed += await self._forget(enrolment_id, cutoff)
        return removed

    async def _forget(self, enrolment_id: str, cutoff: dt.date) -> int:
        await self._jobs.retire(enrolment_id)
        jobs = await self._jobs.of_enrolment(enrolment_id)
        studies = list(dict.fromkeys(stored.study_instance_uid for stored in jobs))
        for study_instance_uid in studies:
            await self._transfers.request_purge(study_instance_uid, self._clock())
        for stored in jobs:
            await self._jobs.delete(stored.job_key)
        for study_instance_uid in studies:
            await self._cleaner.settle(study_instance_uid)
        forgotten = await self._enrolments.forget(enrolment_id, cutoff)
        log.info("enrolment_expired", enrolment_id=enrolment_id, jobs=len(jobs), studies=len(studies))
        return int(forgotten)
