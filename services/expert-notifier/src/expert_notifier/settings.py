"""Settings of the expert-notifier service (environment prefix `PROXYMAGE_`, see proxymage_shared.settings)."""

from __future__ import annotations

from proxymage_shared.settings import ServiceSettings
from pydantic import BaseModel, Field


class SmtpEndpoint(BaseModel):
    """The secure-mail relay (MSSanté in production)."""

    host: str = "127.0.0.1"
    port: int = Field(default=587, ge=1, le=65535)


class Settings(ServiceSettings):
    service_name: str = "expert-notifier"
    health_port: int = 8103
    smtp: SmtpEndpoint = SmtpEndpoint()
