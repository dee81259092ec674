"""Composition root of the expert-notifier: settings, adapters, subscribers, sender and maintenance loops.

Consumes `dcc.meeting-experts.v1`, `dcc.patient-enrolled.v1`, `dcc.studies-selected.v1`,
`dcc.enrolment-withdrawn.v1`, `identity.resolved.v1` and `imaging.study-status.v1`; sends e-mails over SMTP
with STARTTLS and a client certificate; publishes `expertise.notification.v1`. Deletes what it keeps of the
enrolments and meetings past their retention (proxymage_shared.retention).

`build(settings, overrides=Overrides(...))` replaces adapters (tests give in-memory fakes, a fixed clock).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from proxymage_shared import events, topics
from proxymage_shared.events import ExpertiseNotification, utc_now
from proxymage_shared.kafka import E, Handler, publish_event, subscribe
from proxymage_shared.retention import sweeper
from proxymage_shared.retry import BackoffSchedule
from proxymage_shared.service import Service, build_service, periodic

from expert_notifier.handlers import Handlers, NotifierOptions
from expert_notifier.message import MailSettings, default_message_id_domain
from expert_notifier.ports import NotifierRepository, Sender
from expert_notifier.settings import Settings
from expert_notifier.smtp import SmtpSender
from expert_notifier.store import NotifierStore


@dataclass(frozen=True, slots=True)
class Overrides:
    """Adapters to use instead of the real ones (None: the real one). A replaced store is not given the
    real store's start-up and retention tasks; a replaced sender keeps the real relay's readiness probe."""

    store: NotifierRepository | None = None
    sender: Sender | None = None
    clock: Callable[[], dt.datetime] | None = None


def options(settings: Settings) -> NotifierOptions:
    _, envelope_from = email.utils.parseaddr(settings.mail_from)
    return NotifierOptions(
        mail=MailSettings(
            mail_from=settings.mail_from,
            reply_to=settings.reply_to,
            registration_url=settings.dcc_registration_url,
            message_id_domain=settings.message_id_domain or default_message_id_domain(settings.mail_from),
        ),
        envelope_from=envelope_from,
        allowed_domains=settings.smtp.allowed_domains,
        zone=settings.zone(),
        retries=BackoffSchedule(settings.retry_delays_seconds),
        lease=dt.timedelta(seconds=settings.send_lease_seconds),
        retention=dt.timedelta(days=settings.enrolment_retention_days),
        republish_after=dt.timedelta(seconds=settings.republish_after_seconds),
    )


def build(settings: Settings, sender: Sender | None = None, *, overrides: Overrides | None = None) -> Service:
    """The service; `sender` replaces the SMTP sender's sending (tests wrap it), the readiness probe stays."""
    overrides = overrides or Overrides()
    smtp = SmtpSender(settings.smtp)
    # Readiness: the relay answers EHLO, STARTTLS succeeds with our certificate and a command after it.
    service = build_service(settings, readiness_checks={"smtp": smtp.probe})
    outcome_topic = settings.topic(topics.EXPERTISE_NOTIFICATION)

    async def publish(outcome: ExpertiseNotification) -> None:
        await publish_event(service.broker, outcome_topic, outcome.enrolment_id, outcome)

    store: NotifierRepository
    if overrides.store is None:
        mongo_store = NotifierStore(service.mongo_client[settings.database_name()])
        service.on_start.append(mongo_store.ensure_indexes)

        async def sweep_expired(cutoff: dt.date) -> int:
            return await mongo_store.sweep_expired(cutoff, settings.zone())

        service.background.append(sweeper(settings, sweep_expired))
        store = mongo_store
    else:
        store = overrides.store
    handlers = Handlers(
        store, overrides.sender or sender or smtp, publish, options(settings), clock=overrides.clock or utc_now
    )

    def on(topic: str, model: type[E], handler: Handler[E]) -> None:
        subscribe(service.broker, settings, settings.topic(topic), model, handler)

    on(topics.MEETING_EXPERTS, events.MeetingExperts, handlers.on_meeting_experts)
    on(topics.PATIENT_ENROLLED, events.PatientEnrolled, handlers.on_enrolled)
    on(topics.STUDIES_SELECTED, events.StudiesSelected, handlers.on_selected)
    on(topics.ENROLMENT_WITHDRAWN, events.EnrolmentWithdrawn, handlers.on_withdrawn)
    on(topics.IDENTITY_RESOLVED, events.IdentityResolved, handlers.on_identity)
    on(topics.STUDY_STATUS, events.StudyStatusChanged, handlers.on_study_status)

    for _ in range(settings.send_workers):
        service.background.append(_send_worker(handlers, settings.send_poll_seconds))
    service.background.append(periodic("maintenance", handlers.maintain, settings.maintenance_interval_seconds))
    return service


def _send_worker(handlers: Handlers, poll_seconds: float) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    async def run(stop: asyncio.Event) -> None:
        await handlers.send_loop(stop, poll_seconds)

    return run
