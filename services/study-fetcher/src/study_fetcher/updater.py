"""Applying state-machine inputs to stored jobs and publishing every new version: the one way a job changes,
shared by the Kafka handlers (`handlers.py`) and the retrieval workers (`worker.py`).

Each write is conditional on the revision read (`JobRepository.save`); a job changed meanwhile is read again
and the input applied to what it now is (`idempotency.until_written`). A written version is published, then
marked acknowledged: a crash in between is repaired by `republish_pending` (the single-document version of an
outbox). Status events carry ids derived from (job, version): re-publishing sends the same event.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Final

from prometheus_client import Counter
from proxymage_shared.events import Progress as ProgressModel
from proxymage_shared.events import StudyStatusChanged
from proxymage_shared.idempotency import LOST_RACE, LostRace, to_ms, until_written
from proxymage_shared.logging import get_logger

from study_fetcher import domain
from study_fetcher.ports import Clock, JobRepository, PublishStatus, StoredJob

log = get_logger(__name__)

STATUS_NAMESPACE: Final = uuid.UUID("4f0d7a55-31c2-4d8e-a9a3-1b6f0e2c7d41")
STATUS_CHANGES: Final = Counter(
    "proxymage_fetcher_status_changes_total", "Retrieval job versions published, by state.", ["state"]
)


def status_event(stored: StoredJob) -> StudyStatusChanged:
    """The published form of one job version; its id is derived from (job, version): re-publishing after a
    crash sends the same event."""
    job = stored.job
    return StudyStatusChanged(
        event_id=uuid.uuid5(STATUS_NAMESPACE, f"{stored.job_key}:{job.version}"),
        occurred_at=stored.updated_at,
        enrolment_id=stored.enrolment_id,
        study_instance_uid=stored.study_instance_uid,
        status=job.state,
        version=job.version,
        progress=ProgressModel(done=job.progress.done, total=job.progress.total) if job.progress else None,
        attempts=job.attempts,
        next_attempt_at=job.next_attempt_at,
        reason=job.reason,
        reason_code=job.reason_code,
    )


class JobUpdater:
    """Applies state-machine inputs to stored jobs (re-reading on concurrent writes) and publishes every new
    version."""

    def __init__(
        self, jobs: JobRepository, publish: PublishStatus, policy: domain.RetrievalPolicy, clock: Clock
    ) -> None:
        self._jobs = jobs
        self._publish = publish
        self._policy = policy
        self._clock = clock

    async def apply(
        self, stored: StoredJob, event: domain.Input, *, lease_owner: str | None = None
    ) -> tuple[StoredJob, bool]:
        """The job after `event` and whether it changed. The write is conditional on the revision read.

        With `lease_owner` (a worker reporting on its attempt), the event applies only while that worker still
        holds the job: once another took it over (the lease expired), the late report of the abandoned attempt
        changes nothing, however the job is re-read after a lost race."""
        current = stored

        async def attempt() -> tuple[StoredJob, bool] | LostRace:
            nonlocal current
            if lease_owner is not None and current.lease_owner != lease_owner:
                return current, False
            new = domain.transition(current.job, event, self._policy)
            if new is None:
                return current, False
            # A new version is published as soon as it is written (before the work schedule's bookkeeping).
            then = self.publish if new.version != current.job.version else None
            saved = await self._jobs.save(current, new, to_ms(self._clock()), then=then)
            if saved is not None:
                return saved, True
            reread = await self._jobs.get(current.job_key)
            if reread is None:  # pragma: no cover - jobs are never deleted but by retention
                return current, False
            current = reread
            return LOST_RACE

        return await until_written(attempt, what=f"job {stored.job_key}")

    async def publish(self, stored: StoredJob, *, published: Callable[[], None] | None = None) -> None:
        """Publishes the version, then marks it acknowledged; `published` is called in between (the event is in
        Kafka: what must follow it, e.g. waking the worker that will publish the next version, need not wait for
        the acknowledgement's write)."""
        await self._publish(status_event(stored))
        if published is not None:
            published()
        await self._jobs.mark_published(stored.job_key, stored.job.version)
        STATUS_CHANGES.labels(stored.job.state).inc()
        log.info(
            "study_status",
            enrolment_id=stored.enrolment_id,
            study_instance_uid=stored.study_instance_uid,
            status=stored.job.state,
            version=stored.job.version,
            attempts=stored.job.attempts,
            reason=stored.job.reason,
        )

    async def republish_pending(self, older_than: dt.datetime) -> int:
        """Publishes versions written but not acknowledged (the process stopped in between)."""
        pending = await self._jobs.unpublished(older_than)
        for stored in pending:
            await self.publish(stored)
        return len(pending)
