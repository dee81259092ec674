"""Use cases of the study-fetcher's Kafka consumers: events in, durable state and outcome events out.

Handlers never wait for a PACS move: they record jobs and wake the retrieval workers (worker.py), so a
partition is never blocked by a retrieval. Every handler is idempotent: the enrolment document records the
latest identity, selection and refresh handled (and whether their effects are complete), job transitions
are conditional writes keyed by (enrolment, study), and outcome events carry ids derived from what they
describe, so a replay changes nothing and a redelivery after a crash finishes the work.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import Counter
from proxymage_shared.dicom import DicomUnavailableError, MalformedAnswerError
from proxymage_shared.errors import ProxymageError, WriteConflictError, describe
from proxymage_shared.events import (
    IdentityResolved,
    ImagingCatalogued,
    ImagingRefresh,
    PacsPatientRef,
    StudiesSelected,
    StudyRemoved,
    utc_now,
)
from proxymage_shared.idempotency import to_ms
from proxymage_shared.kafka import Delivery
from proxymage_shared.logging import get_logger
from proxymage_shared.reasons import Reason
from proxymage_shared.retry import BackoffSchedule

from study_fetcher import domain, lifecycle
from study_fetcher.catalogue import build_listing
from study_fetcher.lifecycle import Lifecycle, LifecycleStatus
from study_fetcher.ports import (
    Acceptance,
    Clock,
    EnrolmentRepository,
    IdentityOutcome,
    JobChanges,
    JobRepository,
    ListedStudy,
    Pacs,
    PublishCatalogue,
    ViewerCleanup,
    job_key_of,
    owner_of,
)

log = get_logger(__name__)

CATALOGUE_NAMESPACE: Final = uuid.UUID("c3e8b1f2-5a47-4b0e-8d6c-9e2a1f3b5c70")

CATALOGUES: Final = Counter("proxymage_fetcher_catalogues_total", "Catalogues published, by status.", ["status"])


@dataclass(frozen=True, slots=True)
class CatalogueOptions:
    display_names: dict[str, str] = field(default_factory=dict)
    retries: BackoffSchedule = field(default_factory=BackoffSchedule)
    lease: dt.timedelta = dt.timedelta(minutes=2)


class Catalogue:
    """Lists every study of an enrolment's linked PACS patients (one study-level C-FIND per patient)."""

    def __init__(
        self,
        enrolments: EnrolmentRepository,
        pacs: Pacs,
        publish: PublishCatalogue,
        options: CatalogueOptions,
        clock: Clock = utc_now,
    ) -> None:
        self._enrolments = enrolments
        self._pacs = pacs
        self._publish = publish
        self._options = options
        self._clock = clock
        # Called with the enrolment id once its current catalogue is recorded (held jobs can be settled).
        self.on_listed: Callable[[str], Awaitable[None]] | None = None

    async def list_studies(
        self,
        enrolment_id: str,
        patients: tuple[PacsPatientRef, ...],
        trigger: str,
        *,
        previous_failures: int,
        identity_event_id: str | None,
    ) -> ImagingCatalogued:
        """Queries MIRC, publishes the catalogue (or an error with a reason) and records the outcome; an error
        is retried later on the backoff schedule, without anyone acting. A listing is recorded as the current
        catalogue of the identity outcome `identity_event_id` (what selections are judged against)."""
        event_id = uuid.uuid5(CATALOGUE_NAMESPACE, f"{enrolment_id}:{trigger}:{previous_failures}")
        reason: Reason | None = None
        try:
            answers = [(patient, await self._pacs.studies_of(patient)) for patient in patients]
            listing = build_listing(answers, self._options.display_names)
        except DicomUnavailableError:
            reason = domain.PACS_UNREACHABLE
        except MalformedAnswerError as error:
            reason = Reason.of("pacs_error", f"réponse illisible : {describe(error)}")
        except ProxymageError as error:
            reason = Reason.of("catalogue_error", describe(error))
        now = self._clock()
        if reason is None:
            outcome = ImagingCatalogued(
                event_id=event_id, occurred_at=now, enrolment_id=enrolment_id, status="listed", studies=listing.studies
            )
            failures, due_at = 0, None
            if listing.dropped:
                log.warning("catalogue_answers_dropped", enrolment_id=enrolment_id, dropped=listing.dropped)
        else:
            failures = previous_failures + 1
            due_at = self._options.retries.next_attempt_at(now, failures)
            outcome = ImagingCatalogued(
                event_id=event_id,
                occurred_at=now,
                enrolment_id=enrolment_id,
                status="error",
                reason=f"{reason.text} ; nouvel essai automatique à {due_at:%d/%m/%Y %H:%M:%S} UTC",
                reason_code=reason.code,
            )
        await self._publish(outcome)
        await self._enrolments.catalogue_outcome(enrolment_id, failed_attempts=failures, due_at=due_at, now=now)
        if reason is None:
            studies = tuple(
                ListedStudy(study.study_instance_uid, owner_of(study.pacs_patient)) for study in outcome.studies
            )
            if await self._enrolments.catalogue_listed(enrolment_id, identity_event_id, studies) and self.on_listed:
                await self.on_listed(enrolment_id)
        CATALOGUES.labels(outcome.status).inc()
        log.info(
            "catalogue_published",
            enrolment_id=enrolment_id,
            event_id=str(event_id),
            status=outcome.status,
            studies=len(outcome.studies),
            pacs_patients=len(patients),
            reason=reason.code if reason else None,
        )
        return outcome

    async def publish_empty(self, enrolment_id: str, trigger: str) -> None:
        """No linked patient (any more): an empty listing replaces whatever was listed before."""
        await self._publish(
            ImagingCatalogued(
                event_id=uuid.uuid5(CATALOGUE_NAMESPACE, f"{enrolment_id}:{trigger}:0"),
                occurred_at=self._clock(),
                enrolment_id=enrolment_id,
                status="listed",
            )
        )
        await self._enrolments.catalogue_outcome(enrolment_id, failed_attempts=0, due_at=None, now=self._clock())
        CATALOGUES.labels("listed").inc()

    async def retry_due(self) -> int:
        """Lists again every enrolment whose catalogue failed and is due; returns how many."""
        handled = 0
        while (enrolment := await self._enrolments.claim_due_catalogue(self._clock(), self._options.lease)) is not None:
            handled += 1
            if enrolment.lifecycle.status != "matched" or not enrolment.pacs_patients:
                # Not (any more) matched: no PACS query for it (e.g. consent withdrawn meanwhile).
                await self._enrolments.catalogue_outcome(
                    enrolment.enrolment_id, failed_attempts=0, due_at=None, now=self._clock()
                )
                continue
            await self.list_studies(
                enrolment.enrolment_id,
                enrolment.pacs_patients,
                f"retry:{enrolment.catalogue_attempts}",
                previous_failures=enrolment.catalogue_attempts,
                identity_event_id=enrolment.identity_event_id,
            )
        return handled


@dataclass(frozen=True, slots=True)
class RetrievalOptions:
    deadline_after_meeting: dt.timedelta = dt.timedelta(days=1)
    timezone: dt.tzinfo = dt.UTC
    purge_removed: bool = False


class Handlers:
    """The Kafka handlers: identity -> lifecycle + catalogue; selection/removal/refresh -> jobs (then workers).

    Every selected study is judged by the enrolment's lifecycle (`study_fetcher.lifecycle`) before anything
    touches a PACS; a change of the lifecycle judges the existing jobs again (closure, corrected identity,
    held jobs settled once the identity and the catalogue are known).
    """

    def __init__(
        self,
        *,
        enrolments: EnrolmentRepository,
        jobs: JobRepository,
        updater: JobChanges,
        catalogue: Catalogue,
        cleaner: ViewerCleanup,
        options: RetrievalOptions,
        wake: Callable[[], None],
        clock: Clock = utc_now,
    ) -> None:
        self._enrolments = enrolments
        self._jobs = jobs
        self._updater = updater
        self._catalogue = catalogue
        self._cleaner = cleaner
        self._options = options
        self._wake = wake
        self._clock = clock
        catalogue.on_listed = self.settle_held

    def _deadline(self, meeting_date: dt.date | None) -> dt.datetime | None:
        if meeting_date is None:
            return None
        return to_ms(domain.deadline_for(meeting_date, self._options.deadline_after_meeting, self._options.timezone))

    # --- lifecycle and catalogue -------------------------------------------------------------------------

    async def on_identity_resolved(self, event: IdentityResolved, delivery: Delivery) -> None:
        status: LifecycleStatus
        if event.status == "error":
            enrolment = await self._enrolments.get(event.enrolment_id)
            if enrolment is not None and enrolment.identity_source_id == str(event.source_event_id):
                log.info("identity_error_ignored", enrolment_id=event.enrolment_id, event_id=str(event.event_id))
                return  # the same identity could not be re-checked (refresh): what we know still holds
            status = "pending"  # a new (corrected) identity not resolved yet: nothing new is moved meanwhile
        else:
            status = event.status
        source_at = to_ms(event.source_occurred_at or event.occurred_at)
        acceptance = await self._enrolments.accept_identity(
            event.enrolment_id,
            IdentityOutcome(
                event_id=str(event.event_id),
                at=to_ms(event.occurred_at),
                status=status,
                source_event_id=str(event.source_event_id),
                source_at=source_at,
                meeting_date=event.meeting_date,
                pacs_patients=event.pacs_patients if status == "matched" else (),
            ),
        )
        log.info(
            "identity_received",
            enrolment_id=event.enrolment_id,
            event_id=str(event.event_id),
            status=status,
            acceptance=acceptance.value,
        )
        if acceptance in (Acceptance.DUPLICATE, Acceptance.STALE):
            return
        deadline = self._deadline(event.meeting_date)
        if deadline is not None:
            await self._jobs.set_deadline(event.enrolment_id, deadline)
        await self._apply_lifecycle(event.enrolment_id, source_at)
        if status == "matched" and event.pacs_patients:
            await self._catalogue.list_studies(
                event.enrolment_id,
                event.pacs_patients,
                str(event.event_id),
                previous_failures=0,
                identity_event_id=str(event.event_id),
            )
        elif status != "pending":
            # Unmatched, no consent, withdrawn: the catalogue (study metadata) is emptied.
            await self._catalogue.publish_empty(event.enrolment_id, str(event.event_id))
        await self._enrolments.identity_done(event.enrolment_id, str(event.event_id))

    async def _apply_lifecycle(self, enrolment_id: str, changed_at: dt.datetime) -> None:
        """Judges every job of the enrolment again after a lifecycle change; purges what it removed."""
        enrolment = await self._enrolments.get(enrolment_id)
        if enrolment is None:  # pragma: no cover - accepted just before
            return
        life = enrolment.lifecycle
        admitted = False
        for stored in await self._jobs.of_enrolment(enrolment_id):
            change = lifecycle.on_change(life, stored.job, stored.study_instance_uid, changed_at)
            if change is None:
                continue
            after, applied = await self._updater.apply(stored, change)
            if not applied:
                continue
            if isinstance(change, domain.Close):
                await self._cleaner.request(stored.study_instance_uid)
            admitted = admitted or (after.job.state == "queued" and not after.job.held)
        if admitted:
            self._wake()

    async def settle_held(self, enrolment_id: str) -> None:
        """The enrolment's catalogue is listed: held jobs are admitted or denied now."""
        await self._apply_lifecycle(enrolment_id, to_ms(self._clock()))

    async def on_refresh(self, event: ImagingRefresh, delivery: Delivery) -> None:
        acceptance = await self._enrolments.accept_refresh(
            event.enrolment_id, str(event.event_id), to_ms(event.occurred_at)
        )
        log.info(
            "refresh_received",
            enrolment_id=event.enrolment_id,
            event_id=str(event.event_id),
            acceptance=acceptance.value,
        )
        if acceptance in (Acceptance.DUPLICATE, Acceptance.STALE):
            return
        enrolment = await self._enrolments.get(event.enrolment_id)
        if enrolment is None or enrolment.lifecycle.status != "matched" or not enrolment.pacs_patients:
            # Unknown, pending, unmatched, no consent or withdrawn: no PACS is queried for it.
            await self._enrolments.refresh_done(event.enrolment_id, str(event.event_id))
            return
        now = to_ms(self._clock())
        for stored in await self._jobs.of_enrolment(event.enrolment_id):
            await self._updater.apply(stored, domain.Refresh(now))
        self._wake()
        await self._catalogue.list_studies(
            event.enrolment_id,
            enrolment.pacs_patients,
            str(event.event_id),
            previous_failures=0,
            identity_event_id=enrolment.identity_event_id,
        )
        await self._enrolments.refresh_done(event.enrolment_id, str(event.event_id))

    # --- retrieval jobs ----------------------------------------------------------------------------------

    async def on_selected(self, event: StudiesSelected, delivery: Delivery) -> None:
        at = to_ms(event.occurred_at)
        acceptance = await self._enrolments.accept_selection(event.enrolment_id, str(event.event_id), at)
        log.info(
            "selection_received",
            enrolment_id=event.enrolment_id,
            event_id=str(event.event_id),
            studies=len(event.study_instance_uids),
            acceptance=acceptance.value,
        )
        if acceptance in (Acceptance.DUPLICATE, Acceptance.STALE):
            return
        enrolment = await self._enrolments.get(event.enrolment_id)
        life = enrolment.lifecycle if enrolment is not None else Lifecycle()
        deadline = self._deadline(enrolment.meeting_date if enrolment else None)
        selected = dict.fromkeys(event.study_instance_uids)
        existing = {stored.study_instance_uid: stored for stored in await self._jobs.of_enrolment(event.enrolment_id)}
        now = to_ms(self._clock())
        woken = False

        def wake() -> None:
            nonlocal woken
            woken = True
            self._wake()

        for study_instance_uid in selected:
            admission = lifecycle.judge(life, study_instance_uid, at)
            stored = existing.get(study_instance_uid)
            if stored is None:
                job = domain.new_job(at, deadline, admission)
                created = await self._jobs.insert(event.enrolment_id, study_instance_uid, job, now)
                if created is not None:
                    # A worker may start it once `queued` is in Kafka (its `retrieving` comes after), not later.
                    await self._updater.publish(created, published=wake)
                    continue
                stored = await self._jobs.get(job_key_of(event.enrolment_id, study_instance_uid))
                if stored is None:  # pragma: no cover - jobs are never deleted but by retention
                    raise WriteConflictError("job vanished")
            await self._updater.apply(stored, domain.Select(at, admission))
        if not woken:  # else woken per new job already; a worker starting a move wakes the next one anyway
            self._wake()
        for study_instance_uid, stored in existing.items():
            if study_instance_uid not in selected:
                _, removed = await self._updater.apply(stored, domain.Remove(at))
                if removed and self._options.purge_removed:
                    await self._cleaner.request(study_instance_uid)
        await self._judge_again_if_changed(event.enrolment_id, life)
        await self._enrolments.selection_done(event.enrolment_id, str(event.event_id))

    async def _judge_again_if_changed(self, enrolment_id: str, judged_with: Lifecycle) -> None:
        """The jobs were judged with `judged_with`; an identity outcome handled meanwhile (another topic, maybe
        another replica) re-judged only the jobs that existed then. Reading the lifecycle again after writing
        ours closes the race: either that handler saw our jobs, or we see its lifecycle. Without it a job
        admitted under `matched` could be moved after consent was withdrawn, or stay `queued` when withdrawn."""
        enrolment = await self._enrolments.get(enrolment_id)
        if enrolment is None or enrolment.lifecycle == judged_with:
            return
        now = enrolment.lifecycle
        changed_at = now.closed_at if now.closed and now.closed_at is not None else to_ms(self._clock())
        log.info("selection_judged_again", enrolment_id=enrolment_id, status=now.status)
        await self._apply_lifecycle(enrolment_id, changed_at)

    async def on_removed(self, event: StudyRemoved, delivery: Delivery) -> None:
        at = to_ms(event.occurred_at)
        study_instance_uid = event.study_instance_uid
        job_key = job_key_of(event.enrolment_id, study_instance_uid)
        stored = await self._jobs.get(job_key)
        if stored is None:
            # Never selected (yet): remember the removal so that an older selection arriving late is ignored.
            tombstone = domain.removed_tombstone(at)
            created = await self._jobs.insert(event.enrolment_id, study_instance_uid, tombstone, to_ms(self._clock()))
            log.info(
                "removal_received",
                enrolment_id=event.enrolment_id,
                study_instance_uid=study_instance_uid,
                applied=False,
            )
            if created is not None:
                return
            stored = await self._jobs.get(job_key)
            if stored is None:  # pragma: no cover - jobs are never deleted but by retention
                raise WriteConflictError("job vanished")
        _, removed = await self._updater.apply(stored, domain.Remove(at))
        log.info(
            "removal_received", enrolment_id=event.enrolment_id, study_instance_uid=study_instance_uid, applied=removed
        )
        if removed and self._options.purge_removed:
            await self._cleaner.request(study_instance_uid)
