"""Settings of the study-fetcher service (environment prefix `PROXYMAGE_`, see proxymage_shared.settings)."""

from __future__ import annotations

from proxymage_shared.settings import DicomPeer, ServiceSettings

__all__ = ["DicomPeer", "Settings"]


class Settings(ServiceSettings):
    service_name: str = "study-fetcher"
    health_port: int = 8102
    mirc: DicomPeer = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=11112)
    viewer: DicomPeer = DicomPeer(ae_title="VIEWER", host="127.0.0.1", port=11113)
    calling_ae_title: str = "PM_FETCHER"
    # At most this many concurrent associations to MIRC per fetcher instance.
    mirc_max_associations: int = 4
