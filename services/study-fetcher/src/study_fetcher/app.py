"""Composition root of the study-fetcher service: settings, adapters, subscribers, lifespan.

Catalogues studies and moves selected ones MIRC -> viewer store (handlers: issue 4).
"""

from __future__ import annotations

from proxymage_shared.dicom import DicomClient, echo_check
from proxymage_shared.service import Service, build_service

from study_fetcher.settings import Settings


def build(settings: Settings) -> Service:
    mirc = DicomClient(settings.calling_ae_title, settings.mirc, max_associations=settings.mirc_max_associations)
    viewer = DicomClient(settings.calling_ae_title, settings.viewer, max_associations=2)

    async def close_clients() -> None:
        mirc.close()
        viewer.close()

    return build_service(
        settings,
        readiness_checks={"mirc": echo_check(mirc), "viewer": echo_check(viewer)},
        on_stop=[close_clients],
    )
