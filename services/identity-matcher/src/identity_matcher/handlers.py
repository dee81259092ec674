"""Use cases of the identity-matcher: an enrolment in, an `identity.resolved` outcome out.

Semantics (ARCHITECTURE.md, CONTRACT.md):
- no consent: publish `no_consent` and send no DICOM request at all;
- otherwise query MIRC by birth date (narrowing if the answer is capped), apply the strict rules locally,
  publish `matched` (every matching PACS patient) or `unmatched` (with near misses);
- MIRC failing after a few quick tries: publish `error` with a readable reason and retry later on a
  backoff schedule, without anyone acting, and at once on a DCC refresh;
- a newer enrolled event for the same enrolment supersedes the previous outcome; the same event twice
  gives one outcome. The outcome is published before it is recorded, so a crash in between re-publishes
  (at-least-once) rather than loses it; its `event_id` is derived from the source event and attempt, so
  a re-publication carries the same id.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import Counter, Histogram
from proxymage_shared.errors import ProxymageError
from proxymage_shared.events import IdentityResolved, IdentityStatus, ImagingRefresh, PatientEnrolled, utc_now
from proxymage_shared.kafka import Delivery
from proxymage_shared.logging import get_logger
from proxymage_shared.mongo import Document
from proxymage_shared.retry import BackoffSchedule

from identity_matcher.directory import Candidates, PatientDirectory
from identity_matcher.matching import Resolution, dcc_side_problem, normalised_names, resolve
from identity_matcher.query_plan import query_plan, vigilance_queries
from identity_matcher.rules import DccIdentity
from identity_matcher.store import Acceptance, EnrolmentStore

log = get_logger(__name__)

OUTCOMES: Final = Counter("proxymage_identity_outcomes_total", "Identity resolutions published, by status.", ["status"])
RESOLUTION_SECONDS: Final = Histogram(
    "proxymage_identity_resolution_seconds",
    "Time from handling an enrolment to publishing its outcome.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTCOME_NAMESPACE: Final = uuid.UUID("9d5c3a0e-6f1b-4f5e-9a57-3c1d2b7e8f10")

Publish = Callable[[IdentityResolved], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ResolverOptions:
    family_is_used_name: bool = False
    pacs_attempts: int = 3
    pacs_retry_base_seconds: float = 0.5
    error_retries: BackoffSchedule = field(default_factory=BackoffSchedule)
    lease: dt.timedelta = dt.timedelta(minutes=2)


class IdentityResolver:
    def __init__(
        self,
        store: EnrolmentStore,
        directory: PatientDirectory,
        publish: Publish,
        options: ResolverOptions,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._store = store
        self._directory = directory
        self._publish = publish
        self._options = options
        self._clock = clock

    # --- Kafka handlers ------------------------------------------------------------------------------

    async def on_enrolled(self, event: PatientEnrolled, delivery: Delivery) -> None:
        acceptance = await self._store.accept(event)
        log.info(
            "enrolment_received",
            enrolment_id=event.enrolment_id,
            event_id=str(event.event_id),
            consent=event.consent,
            acceptance=acceptance.value,
        )
        if acceptance in (Acceptance.NEW, Acceptance.RESUME):
            await self._resolve(event, previous_attempts=0, resolutions_done=0)

    async def on_refresh(self, event: ImagingRefresh, delivery: Delivery) -> None:
        now = self._clock()
        claimed = await self._store.claim_for_refresh(event.enrolment_id, now, self._options.lease)
        log.info("refresh_received", enrolment_id=event.enrolment_id, resolving=claimed is not None)
        if claimed is not None:
            await self._resolve_stored(claimed)

    # --- durable retries -------------------------------------------------------------------------------

    async def retry_due(self) -> int:
        """Resolves again every `error` enrolment whose retry is due; returns how many."""
        handled = 0
        while (claimed := await self._store.claim_due_retry(self._clock(), self._options.lease)) is not None:
            await self._resolve_stored(claimed)
            handled += 1
        return handled

    async def _resolve_stored(self, document: Document) -> None:
        event = PatientEnrolled.model_validate(document["event"], strict=False)
        await self._resolve(
            event,
            previous_attempts=int(document.get("attempts", 0)),
            resolutions_done=int(document.get("resolutions", 0)),
        )

    # --- resolution ------------------------------------------------------------------------------------

    async def _resolve(self, event: PatientEnrolled, *, previous_attempts: int, resolutions_done: int) -> None:
        started = time.perf_counter()
        attempts = previous_attempts + 1
        next_attempt_at: dt.datetime | None = None
        if not event.consent:
            resolution = Resolution("unmatched")
            status: IdentityStatus = "no_consent"
            reason: str | None = "the patient's consent is not recorded: no PACS was queried"
        else:
            identity = DccIdentity.from_patient(event.patient)
            problem = dcc_side_problem(identity)
            if problem is not None:
                resolution, status, reason = Resolution("unmatched", reason=problem), "unmatched", problem
            else:
                try:
                    candidates = await self._find(identity)
                except ProxymageError as error:
                    next_attempt_at = self._options.error_retries.next_attempt_at(self._clock(), attempts)
                    resolution = Resolution("unmatched")
                    status = "error"
                    reason = (
                        f"MIRC could not be queried ({error}); "
                        f"next automatic try at {next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
                    )
                else:
                    resolution = resolve(
                        identity, candidates.records, family_is_used_name=self._options.family_is_used_name
                    )
                    status, reason = resolution.status, resolution.reason
                    log.info(
                        "identity_compared",
                        enrolment_id=event.enrolment_id,
                        candidates=len(candidates.records),
                        query_level=candidates.level,
                    )
        outcome = IdentityResolved(
            # The same resolution re-published after a crash keeps its id; a new resolution gets a new one.
            event_id=uuid.uuid5(OUTCOME_NAMESPACE, f"{event.event_id}:{resolutions_done + 1}"),
            occurred_at=self._clock(),
            enrolment_id=event.enrolment_id,
            source_event_id=event.event_id,
            meeting_id=event.meeting_id,
            meeting_date=event.meeting_date,
            status=status,
            pacs_patients=resolution.pacs_patients,
            near_misses=resolution.near_misses,
            reason=reason,
        )
        if not await self._store.is_current(event.enrolment_id, str(event.event_id)):
            log.info("outcome_superseded", enrolment_id=event.enrolment_id, event_id=str(event.event_id))
            return
        await self._publish(outcome)
        await self._store.record_outcome(
            event.enrolment_id,
            str(event.event_id),
            status,
            attempts=attempts if status == "error" else 0,
            next_attempt_at=next_attempt_at,
            outcome_event_id=str(outcome.event_id),
            now=self._clock(),
        )
        OUTCOMES.labels(status).inc()
        RESOLUTION_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "identity_resolved",
            enrolment_id=event.enrolment_id,
            event_id=str(outcome.event_id),
            status=status,
            pacs_patients=len(outcome.pacs_patients),
            near_misses=[f"{n.trait}:{n.kind}" for n in outcome.near_misses],
            attempts=attempts,
        )

    async def _find(self, identity: DccIdentity) -> Candidates:
        """Queries MIRC, retrying transient failures a few times quickly before giving up for now."""
        plan = query_plan(identity.birth_date, identity.sex, normalised_names(identity))
        vigilance = vigilance_queries(identity.birth_date, identity.sex)
        for attempt in range(1, self._options.pacs_attempts + 1):
            try:
                return await self._directory.find(plan, vigilance)
            except ProxymageError:
                if attempt == self._options.pacs_attempts:
                    raise
                await asyncio.sleep(self._options.pacs_retry_base_seconds * 2 ** (attempt - 1))
        raise AssertionError("unreachable")
