"""Settings of the gateway service (environment prefix `PROXYMAGE_`, see proxymage_shared.settings)."""

from __future__ import annotations

from proxymage_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "gateway"
    health_port: int = 8080
