"""Settings of the identity-matcher service (environment prefix `PROXYMAGE_`, see proxymage_shared.settings)."""

from __future__ import annotations

from proxymage_shared.settings import DicomPeer, ServiceSettings

__all__ = ["DicomPeer", "Settings"]


class Settings(ServiceSettings):
    service_name: str = "identity-matcher"
    health_port: int = 8101
    mirc: DicomPeer = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=11112)
    calling_ae_title: str = "PM_IDENTITY"
    mirc_max_associations: int = 4
