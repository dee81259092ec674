"""Settings of the identity-matcher service (environment prefix `PROXYMAGE_`, see proxymage_shared.settings)."""

from __future__ import annotations

import zoneinfo

from proxymage_shared.retry import DEFAULT_DELAYS_SECONDS
from proxymage_shared.settings import DicomPeer, DicomServiceSettings, TimeZoneName
from pydantic import Field

__all__ = ["DicomPeer", "Settings"]


class Settings(DicomServiceSettings):
    service_name: str = "identity-matcher"
    health_port: int = 8101
    mirc: DicomPeer = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=11112)
    calling_ae_title: str = "PM_IDENTITY"
    # Per process; all the replicas of every service together stay within `mirc.max_associations` (the budget).
    mirc_max_associations: int = Field(default=6, ge=1)
    # Enrolments handled at once in one process (one consumer per partition share, order kept per key).
    enrolment_concurrency: int = Field(default=6, ge=1, le=64)
    # CONTRACT.md rule 2: a PACS may declare that PatientName's family component is the used name.
    mirc_family_is_used_name: bool = False
    # An answer this large is treated as capped by the PACS: the query is narrowed and sent again.
    mirc_max_answers: int = Field(default=500, ge=1)
    # In-handler tries of one resolution before it is reported as `error` and retried later, waiting about
    # `pacs_retry_base_seconds`, then twice as long, ... between them (jittered: retry.RetryPolicy.uncapped).
    pacs_attempts: int = Field(default=3, ge=1)
    pacs_retry_base_seconds: float = Field(default=0.5, ge=0)
    # Later retries of an `error` outcome, without anyone acting (the last delay repeats).
    error_retry_delays_seconds: tuple[float, ...] = DEFAULT_DELAYS_SECONDS
    error_retry_poll_seconds: float = Field(default=2.0, gt=0)
    # A claimed retry is owned this long; an instance that died loses it after this.
    retry_lease_seconds: float = Field(default=120.0, gt=0)
    # Times in the French reasons (the next automatic try of an `error`) are given in this zone.
    display_timezone: TimeZoneName = "Europe/Paris"

    def timezone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.display_timezone)
