"""Deleting studies from the viewer store once no live enrolment needs them (CONTRACT v1.1).

A purge is *owed* (recorded on the study's transfer document) when a study is removed because consent or the
enrolment was withdrawn or the identity corrected, and, when the site enables it, on every DCC removal. It
runs under the study's transfer lease, so no move of the study runs meanwhile, and only if no live job (of
any enrolment) uses the study: two enrolments of the same patient may share a study, and the other keeps
it. A purge that cannot run now (a move holds the study, the viewer store is down) stays owed and is
retried by the worker that ends the move and by the housekeeping loop.

Retention owes a purge of every study of an enrolment past its retention (`study_fetcher.retention`); its
jobs, retired first, are no longer live users. Once the purge ran and no job at all refers to the study,
its transfer document goes too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Final

from prometheus_client import Counter
from proxymage_shared.errors import describe
from proxymage_shared.logging import get_logger

from study_fetcher import domain
from study_fetcher.ports import Clock, JobRepository, TransferRepository, ViewerPurge, ViewerStoreUnavailableError

log = get_logger(__name__)

PURGES: Final = Counter("proxymage_fetcher_purges_total", "Removed studies purged from the viewer store.", ["outcome"])
PURGE_TIMEOUT_SECONDS: Final = 60.0


class ViewerCleaner:
    def __init__(
        self,
        *,
        jobs: JobRepository,
        transfers: TransferRepository,
        purge: ViewerPurge,
        owner: str,
        lease: dt.timedelta,
        clock: Clock,
    ) -> None:
        self._jobs = jobs
        self._transfers = transfers
        self._purge = purge
        self._owner = owner
        self._lease = lease
        self._clock = clock

    async def request(self, study_instance_uid: str) -> None:
        """Owes a purge of the study and tries it at once."""
        await self._transfers.request_purge(study_instance_uid, self._clock())
        await self.settle(study_instance_uid)

    async def settle(self, study_instance_uid: str) -> None:
        """Runs an owed purge if the study is free and unused; leaves it owed otherwise."""
        transfer = await self._transfers.claim(study_instance_uid, self._owner, self._clock(), self._lease)
        if transfer is None:
            PURGES.labels("busy").inc()
            return  # a move of the study is running: its worker settles the purge when it ends
        try:
            if not transfer.purge_pending:
                return
            if await self._jobs.live_users(study_instance_uid, domain.LIVE_STATES):
                await self._transfers.purge_settled(study_instance_uid, self._owner)
                PURGES.labels("in_use").inc()
                return
            try:
                deleted = await asyncio.wait_for(self._purge.delete_study(study_instance_uid), PURGE_TIMEOUT_SECONDS)
            except (ViewerStoreUnavailableError, TimeoutError) as error:
                PURGES.labels("error").inc()
                log.warning("purge_failed", study_instance_uid=study_instance_uid, error=describe(error))
                return  # still owed: housekeeping tries again
            await self._transfers.forget_verification(study_instance_uid, self._owner)
            await self._transfers.purge_settled(study_instance_uid, self._owner)
            PURGES.labels("deleted").inc()
            log.info("study_purged", study_instance_uid=study_instance_uid, deleted=deleted)
            if not await self._jobs.any_of_study(study_instance_uid):
                # No enrolment refers to the study any more (retention deleted their jobs): nothing to keep.
                await self._transfers.forget(study_instance_uid, self._owner)
        finally:
            await self._transfers.release(study_instance_uid, self._owner, verified_instances=None, now=self._clock())

    async def settle_owed(self) -> int:
        """Housekeeping: tries every owed purge again; returns how many were looked at."""
        owed = await self._transfers.pending_purges()
        for study_instance_uid in owed:
            await self.settle(study_instance_uid)
        return len(owed)
