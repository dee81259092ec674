"""Composition root of the identity-matcher service: settings, adapters, subscribers, lifespan.

Consumes dcc.patient-enrolled.v1 and publishes identity.resolved.v1 (handlers: issue 3).
"""

from __future__ import annotations

from proxymage_shared.dicom import DicomClient, echo_check
from proxymage_shared.service import Service, build_service

from identity_matcher.settings import Settings


def build(settings: Settings) -> Service:
    mirc = DicomClient(settings.calling_ae_title, settings.mirc, max_associations=settings.mirc_max_associations)

    async def close_mirc() -> None:
        mirc.close()

    return build_service(settings, readiness_checks={"mirc": echo_check(mirc)}, on_stop=[close_mirc])
