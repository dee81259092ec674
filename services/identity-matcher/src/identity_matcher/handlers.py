"""Use cases of the identity-matcher: an enrolment's lifecycle events in, `identity.resolved` outcomes out.

Semantics (ARCHITECTURE.md, CONTRACT.md "Lifecycle of an enrolment (v1.1)"):
- the enrolment's current lifecycle event is the newest (by `occurred_at`, then `event_id`) of its enrolled
  events and withdrawals (`lifecycle.py`); only the current one is answered, whatever the order of arrival;
- withdrawn: publish `withdrawn` (answering the withdrawal) and send no DICOM request at all;
- no consent: publish `no_consent` and send no DICOM request at all;
- otherwise query MIRC by birth date (narrowing if the answer is capped), apply the strict rules locally,
  publish `matched` (every matching PACS patient) or `unmatched` (with near misses);
- MIRC failing after a few quick tries (`pacs_retry`, in place): publish `error` with a readable reason and
  retry later on a backoff schedule, without anyone acting, and at once on a DCC refresh;
- a newer enrolled event for the same enrolment supersedes the previous outcome (and re-opens a withdrawn
  enrolment); the same event twice gives one outcome. The outcome is published before it is recorded, so
  a crash in between re-publishes (at-least-once) rather than loses it; its `event_id` is derived from the
  source event and attempt, so a re-publication carries the same id.

Every outcome carries `source_occurred_at` so that consumers can order it against the enrolment's other
events, and a stable `reason_code` with its French `reason` (proxymage_shared.reasons) unless `matched`.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final
from zoneinfo import ZoneInfo

from prometheus_client import Counter, Histogram
from proxymage_shared.errors import ProxymageError, describe
from proxymage_shared.events import (
    EnrolmentWithdrawn,
    IdentityResolved,
    IdentityStatus,
    ImagingRefresh,
    PatientEnrolled,
    utc_now,
)
from proxymage_shared.kafka import Delivery
from proxymage_shared.logging import get_logger
from proxymage_shared.reasons import Reason
from proxymage_shared.retry import BackoffSchedule, RetryPolicy, retry_in_place

from identity_matcher.lifecycle import ANSWER
from identity_matcher.matching import Resolution, dcc_side_problem, normalised_names, resolve
from identity_matcher.ports import Candidates, Claim, EnrolmentRepository, PatientDirectory, RecordedOutcome
from identity_matcher.query_plan import query_plan, vigilance_queries
from identity_matcher.rules import DccIdentity

log = get_logger(__name__)

OUTCOMES: Final = Counter("proxymage_identity_outcomes_total", "Identity resolutions published, by status.", ["status"])
RESOLUTION_SECONDS: Final = Histogram(
    "proxymage_identity_resolution_seconds",
    "Time from handling an enrolment to publishing its outcome.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTCOME_NAMESPACE: Final = uuid.UUID("9d5c3a0e-6f1b-4f5e-9a57-3c1d2b7e8f10")

Publish = Callable[[IdentityResolved], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolverOptions:
    # The in-place tries of one resolution's MIRC queries (retry.py, step 2), from the settings
    # (`RetryPolicy.uncapped(settings.pacs_attempts, settings.pacs_retry_base_seconds)`, app.options).
    pacs_retry: RetryPolicy
    family_is_used_name: bool = False
    error_retries: BackoffSchedule = field(default_factory=BackoffSchedule)
    lease: dt.timedelta = dt.timedelta(minutes=2)
    # The zone in which reasons give times (the next automatic try) to the people reading them.
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Paris"))


class Handlers:
    """The identity-matcher's handlers of consumed events, and its durable retry round."""

    def __init__(
        self,
        store: EnrolmentRepository,
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
        if acceptance in ANSWER:
            await self._resolve(event, previous_attempts=0, resolutions_done=0)

    async def on_withdrawn(self, event: EnrolmentWithdrawn, delivery: Delivery) -> None:
        acceptance = await self._store.accept_withdrawal(event)
        # The withdrawal's free-text reason is never logged: it may name the patient.
        log.info(
            "withdrawal_received",
            enrolment_id=event.enrolment_id,
            event_id=str(event.event_id),
            acceptance=acceptance.value,
        )
        if acceptance in ANSWER:
            await self._withdraw(event)

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

    async def _resolve_stored(self, claimed: Claim) -> None:
        await self._resolve(claimed.event, previous_attempts=claimed.attempts, resolutions_done=claimed.resolutions)

    # --- withdrawal ------------------------------------------------------------------------------------

    async def _withdraw(self, event: EnrolmentWithdrawn) -> None:
        started = time.perf_counter()
        stored = await self._store.enrolment(event.enrolment_id)
        # The meeting comes from the enrolled event kept so far, if one was seen before the withdrawal.
        enrolled = stored.enrolled if stored is not None else None
        reason = Reason.of("enrolment_withdrawn")
        outcome = IdentityResolved(
            event_id=_outcome_id(str(event.event_id), stored.resolutions if stored is not None else 0),
            occurred_at=self._clock(),
            enrolment_id=event.enrolment_id,
            source_event_id=event.event_id,
            source_occurred_at=event.occurred_at,
            meeting_id=enrolled.meeting_id if enrolled else None,
            meeting_date=enrolled.meeting_date if enrolled else None,
            status="withdrawn",
            reason=reason.text,
            reason_code=reason.code,
        )
        await self._answer(outcome, str(event.event_id), attempts=0, next_attempt_at=None, started=started)

    # --- resolution ------------------------------------------------------------------------------------

    async def _resolve(self, event: PatientEnrolled, *, previous_attempts: int, resolutions_done: int) -> None:
        started = time.perf_counter()
        attempts = previous_attempts + 1
        next_attempt_at: dt.datetime | None = None
        status: IdentityStatus
        if not event.consent:
            resolution = Resolution("unmatched", reason=Reason.of("no_consent"))
            status = "no_consent"
        else:
            identity = DccIdentity.from_patient(event.patient)
            problem = dcc_side_problem(identity)
            if problem is not None:
                resolution, status = Resolution("unmatched", reason=problem), "unmatched"
            else:
                try:
                    candidates = await self._find(identity, event.enrolment_id, str(event.event_id))
                except _SupersededError:
                    # Withdrawn, or a newer enrolled event, handled while we waited between tries: that event
                    # is answered by its own handler; this one answers nothing and queries nothing more.
                    log.info("outcome_superseded", enrolment_id=event.enrolment_id, event_id=str(event.event_id))
                    return
                except ProxymageError as error:
                    next_attempt_at = self._options.error_retries.next_attempt_at(self._clock(), attempts)
                    detail = "prochain essai automatique le " + french_time(next_attempt_at, self._options.timezone)
                    resolution = Resolution("unmatched", reason=Reason.of("identity_error", detail))
                    status = "error"
                    log.warning("mirc_query_failed", enrolment_id=event.enrolment_id, error=describe(error))
                else:
                    resolution = resolve(
                        identity, candidates.records, family_is_used_name=self._options.family_is_used_name
                    )
                    status = resolution.status
                    log.info(
                        "identity_compared",
                        enrolment_id=event.enrolment_id,
                        candidates=len(candidates.records),
                        query_level=candidates.level,
                    )
        outcome = IdentityResolved(
            # The same resolution re-published after a crash keeps its id; a new resolution gets a new one.
            event_id=_outcome_id(str(event.event_id), resolutions_done),
            occurred_at=self._clock(),
            enrolment_id=event.enrolment_id,
            source_event_id=event.event_id,
            source_occurred_at=event.occurred_at,
            meeting_id=event.meeting_id,
            meeting_date=event.meeting_date,
            status=status,
            pacs_patients=resolution.pacs_patients,
            near_misses=resolution.near_misses,
            reason=resolution.reason.text if resolution.reason else None,
            reason_code=resolution.reason.code if resolution.reason else None,
        )
        await self._answer(
            outcome,
            str(event.event_id),
            attempts=attempts if status == "error" else 0,
            next_attempt_at=next_attempt_at,
            started=started,
        )

    async def _answer(
        self,
        outcome: IdentityResolved,
        source_event_id: str,
        *,
        attempts: int,
        next_attempt_at: dt.datetime | None,
        started: float,
    ) -> None:
        """Publishes then records `outcome`, unless a newer lifecycle event superseded its source meanwhile."""
        if not await self._store.is_current(outcome.enrolment_id, source_event_id):
            log.info("outcome_superseded", enrolment_id=outcome.enrolment_id, event_id=source_event_id)
            return
        await self._publish(outcome)
        await self._store.record(
            RecordedOutcome(
                outcome.enrolment_id,
                source_event_id,
                outcome.status,
                attempts=attempts,
                next_attempt_at=next_attempt_at,
                outcome_event_id=str(outcome.event_id),
                at=self._clock(),
            )
        )
        OUTCOMES.labels(outcome.status).inc()
        RESOLUTION_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "identity_resolved",
            enrolment_id=outcome.enrolment_id,
            event_id=str(outcome.event_id),
            source_event_id=source_event_id,
            status=outcome.status,
            reason_code=outcome.reason_code,
            pacs_patients=len(outcome.pacs_patients),
            near_misses=[f"{n.trait}:{n.kind}" for n in outcome.near_misses],
            attempts=attempts,
        )

    async def _find(self, identity: DccIdentity, enrolment_id: str, source_event_id: str) -> Candidates:
        """Queries MIRC, retrying transient failures a few times quickly before giving up for now.

        Each try first checks that the event being answered is still the enrolment's current one: a
        withdrawal, or an enrolled event without consent, handled by another consumer while we waited between
        tries must stop the queries (no DICOM request for them), not only the publication (`_answer`)."""
        plan = query_plan(identity.birth_date, identity.sex, normalised_names(identity))
        vigilance = vigilance_queries(identity.birth_date, identity.sex)

        async def find() -> Candidates:
            if not await self._store.is_current(enrolment_id, source_event_id):
                raise _SupersededError
            return await self._directory.find(plan, vigilance)

        def on_retry(attempt: int, error: BaseException, delay: float) -> None:
            log.info("mirc_query_retrying", attempt=attempt, error=describe(error), delay=round(delay, 3))

        return await retry_in_place(find, self._options.pacs_retry, retry_on=(ProxymageError,), on_retry=on_retry)


class _SupersededError(Exception):
    """The event being resolved is no longer the enrolment's current lifecycle event."""


def _outcome_id(source_event_id: str, resolutions_done: int) -> uuid.UUID:
    return uuid.uuid5(OUTCOME_NAMESPACE, f"{source_event_id}:{resolutions_done + 1}")


def french_time(moment: dt.datetime, zone: ZoneInfo) -> str:
    """`05/03/2026 à 14:02:07 (heure de Paris)`: a time as the console's readers say it, in their zone."""
    local = moment.astimezone(zone)
    place = zone.key.rsplit("/", 1)[-1].replace("_", " ")
    return f"{local:%d/%m/%Y à %H:%M:%S} (heure de {place})"
