"""Composition root of the gateway service: settings, adapters, subscribers, the HTTP app, lifespan.

One HTTP port serves the REST API and SSE (`/api/v1/...`), the documents (`/docs`, `/openapi.json`,
`/asyncapi`, `/asyncapi.json`), the operator console, the OHIF viewer (`/viewer/`) with its read-only
DICOMweb path (`/dicom-web/`) and the health endpoints (`/healthz`, `/readyz`, `/metrics`). Consumes every
outcome topic and the DCC topics it shows (ARCHITECTURE.md "Topics") into the read model; publishes nothing but
the DCC's commands.

`build(settings, overrides=Overrides(...))` replaces adapters (tests give an in-memory read model).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from proxymage_shared.events import INBOUND_EVENT_TYPES, OUTCOME_EVENT_TYPES, Event
from proxymage_shared.kafka import publish_event, subscribe
from proxymage_shared.retention import sweeper
from proxymage_shared.service import Service, build_service
from starlette.applications import Starlette

from gateway import console, documents, ohif
from gateway.api import ApiContext, create_api
from gateway.asyncapi import CONSUMED_TOPICS, specification
from gateway.audit import Auditor
from gateway.auth import TokenVerifier
from gateway.console import signin
from gateway.dicomweb import PREFIX as DICOMWEB_PREFIX
from gateway.dicomweb import DicomWebProxy, StoreAccount
from gateway.handlers import Handlers
from gateway.hardening import HardeningMiddleware
from gateway.hub import Hub
from gateway.ports import ReadModel
from gateway.settings import Settings
from gateway.store import ReadModelStore
from gateway.study_access import StudyAccess
from gateway.viewer import ViewerLinks

EVENT_TYPES: dict[str, type[Event]] = {**INBOUND_EVENT_TYPES, **OUTCOME_EVENT_TYPES}


def _attach(api: FastAPI, health: Starlette) -> FastAPI:
    """The gateway's app, with the health app's routes (/healthz, /readyz, /metrics) added to it."""
    api.router.routes.extend(health.routes)
    return api


@dataclass(frozen=True, slots=True)
class Overrides:
    """Adapters to use instead of the real ones (None: the real one). A replaced read model is not given the
    real store's start-up (indexes) and retention tasks."""

    store: ReadModel | None = None


def build(settings: Settings, *, overrides: Overrides | None = None) -> Service:
    overrides = overrides or Overrides()
    service = build_service(settings)
    store: ReadModel
    if overrides.store is None:
        mongo_store = ReadModelStore(
            service.mongo_client[settings.database_name()], write_linger_seconds=settings.write_linger_ms / 1000
        )
        service.on_start.append(mongo_store.ensure_indexes)
        service.background.append(sweeper(settings, _sweep(mongo_store, settings)))
        store = mongo_store
    else:
        store = overrides.store
    hub = Hub(settings.sse_buffer_size, settings.sse_max_streams)
    links = ViewerLinks(settings.viewer_url_template, settings.public_url or "")
    sign_in = signin.from_settings(settings)  # personal sign-in (OpenID Connect), None when not configured
    verifier = TokenVerifier(settings.api_tokens, sign_in.sessions if sign_in else None)
    auditor = Auditor(store.record_audit, settings.audit_batch_size)
    access = StudyAccess(store.enrolments_selecting, settings.viewer_access_cache_seconds)
    password = settings.viewer_dicomweb_password
    viewer_store = (
        StoreAccount(
            settings.viewer_dicomweb_url,
            settings.viewer_dicomweb_username,
            password.get_secret_value() if password else None,
        )
        if settings.viewer_dicomweb_url
        else None
    )
    dicomweb = DicomWebProxy(viewer_store, verifier, access, auditor, settings.public_url)
    handlers = Handlers(store, hub, links, on_enrolment_change=access.forget)
    for topic in CONSUMED_TOPICS:
        subscribe(
            service.broker,
            settings,
            settings.topic(topic),
            EVENT_TYPES[topic],
            handlers.handle,
            group_suffix=settings.consumer_group_suffix,
        )

    async def publish(topic: str, key: str, event: Event) -> None:
        await publish_event(service.broker, settings.topic(topic), key, event)

    zone = ZoneInfo(settings.timezone)
    api = create_api(
        ApiContext(
            store=store,
            hub=hub,
            verifier=verifier,
            auditor=auditor,
            links=links,
            publish=publish,
            today=lambda: dt.datetime.now(zone).date(),
            now=lambda: dt.datetime.now(dt.UTC),
            heartbeat_seconds=settings.sse_heartbeat_seconds,
            page_size=settings.meetings_page_size,
            expert_domains=settings.smtp.allowed_domains,
            zone=zone,
        )
    )
    documents.mount(api, specification(settings.kafka_bootstrap_servers))
    if sign_in is not None:
        signin.mount(api, sign_in)
        service.on_stop.append(sign_in.client.close)
    console.mount(
        api,
        console.ConsoleOptions(settings.console_contact, settings.smtp.allowed_domains),
        sign_in=sign_in is not None,
    )
    # Outermost: the body limit and the Origin check come before authentication and parsing.
    api.add_middleware(HardeningMiddleware, max_body_bytes=settings.max_body_bytes, public_url=settings.public_url)
    ohif.mount(api, settings.viewer_app_dir, verifier)
    api.mount(DICOMWEB_PREFIX, dicomweb)

    async def close_streams() -> None:
        hub.close()

    service.http_app = lambda health: _attach(api, health)
    service.on_stop.append(close_streams)
    service.on_stop.append(dicomweb.close)
    service.background.append(auditor.run)
    return service


def _sweep(store: ReadModelStore, settings: Settings) -> Callable[[dt.date], Awaitable[int]]:
    """The retention sweep: the read model's expired documents, and audit entries past their own retention."""

    async def sweep(cutoff: dt.date) -> int:
        audit_before = dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.audit_retention_days)
        return await store.sweep_expired(cutoff, audit_before)

    return sweep
