"""Settings of the study-fetcher service (environment prefix `PROXYMAGE_`, see proxymage_shared.settings)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from proxymage_shared.retry import DEFAULT_DELAYS_SECONDS, DEFAULT_JITTER, BackoffSchedule
from proxymage_shared.settings import DicomPeer, DicomServiceSettings, TimeZoneName
from pydantic import Field, SecretStr, model_validator

__all__ = ["DicomPeer", "Settings"]


class Settings(DicomServiceSettings):
    service_name: str = "study-fetcher"
    health_port: int = 8102
    mirc: DicomPeer = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=11112)
    viewer: DicomPeer = DicomPeer(ae_title="VIEWER", host="127.0.0.1", port=11113)
    calling_ae_title: str = "PM_FETCHER"
    # The C-MOVE destination: the viewer store's AE title as MIRC knows it (default: `viewer.ae_title`).
    move_destination_ae_title: str | None = Field(default=None, min_length=1, max_length=16)
    # At most this many concurrent associations to MIRC per fetcher instance; as many retrieval workers. All the
    # replicas of every service together stay within `mirc.max_associations` (the association budget).
    mirc_max_associations: int = Field(default=4, ge=1, le=64)
    viewer_max_associations: int = Field(default=2, ge=1, le=64)
    # Seconds to wait for each DIMSE response (a C-MOVE sends one per stored instance).
    dimse_timeout_seconds: float = Field(default=300.0, gt=0)

    # The "PACS" column when MIRC does not return InstitutionName: IssuerOfPatientID -> display name.
    pacs_display_names: dict[str, str] = Field(default_factory=dict)

    # Retrieval retries (ARCHITECTURE.md): delays after failed attempt 1, 2, ...; the last one repeats.
    retry_delays_seconds: tuple[float, ...] = DEFAULT_DELAYS_SECONDS
    retry_jitter: float = Field(default=DEFAULT_JITTER, ge=0, lt=1)
    # Deadline = midnight starting the meeting day (in `deadline_timezone`) + this (default: end of that day).
    deadline_after_meeting: dt.timedelta = dt.timedelta(days=1)
    deadline_timezone: TimeZoneName = "Europe/Paris"
    # A claimed job (and the study transfer it runs) is owned this long, renewed while the work goes on;
    # the job of an instance that died is taken over once it expires (so: within this long).
    lease_seconds: float = Field(default=15.0, gt=0)
    # The renewal's period (a heartbeat beside the move); below `lease_seconds`, with room for a slow write or
    # two (a renewal that finds the lease taken over cancels the move).
    lease_renewal_seconds: float = Field(default=5.0, gt=0)
    # How often each fetcher asks MIRC and the viewer store whether they answer (C-ECHO). When one answers
    # again after failing (or at the first answer after start), the jobs waiting because it was unreachable
    # are retried at once, spread over `peer_recovery_spread_seconds`, instead of at their backoff's time.
    peer_probe_seconds: float = Field(default=2.0, gt=0)
    peer_recovery_spread_seconds: float = Field(default=5.0, ge=0)
    # How often idle workers look for due jobs (a selection or refresh handled here wakes them at once).
    poll_seconds: float = Field(default=1.0, gt=0)
    # A job whose study is being moved for another enrolment looks again after at most this long.
    transfer_wait_seconds: float = Field(default=1.0, gt=0)
    # At most one progress update per study per this many seconds.
    progress_interval_seconds: float = Field(default=0.5, gt=0)
    # An event written but not acknowledged by Kafka (crash in between) is published again after this.
    republish_after_seconds: float = Field(default=10.0, gt=0)

    # How often a running move checks that its jobs still want it (cancelled once all are removed).
    cancel_poll_seconds: float = Field(default=1.0, gt=0)

    # DCC removal: also delete the study from the viewer store (Orthanc REST) when no live job uses it.
    # Consent withdrawn, enrolment withdrawn and corrected identity always delete it (CONTRACT v1.1), so the
    # viewer store's REST API is required.
    purge_removed_from_viewer: bool = False
    viewer_rest_url: str | None = None  # e.g. http://127.0.0.1:8042
    viewer_rest_username: str | None = None
    viewer_rest_password: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        BackoffSchedule(self.retry_delays_seconds, self.retry_jitter)  # raises on an invalid schedule
        if self.lease_renewal_seconds >= self.lease_seconds:
            raise ValueError("lease_renewal_seconds must be below lease_seconds (else leases lapse during moves)")
        if not self.viewer_rest_url:
            raise ValueError(
                "viewer_rest_url is required: the studies of a withdrawn enrolment (or after consent is withdrawn)"
                " must be deleted from the viewer store (CONTRACT v1.1)"
            )
        return self

    def retry_schedule(self) -> BackoffSchedule:
        return BackoffSchedule(self.retry_delays_seconds, self.retry_jitter)

    def timezone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.deadline_timezone)

    def viewer_rest(self) -> str:
        """The viewer store's REST URL (the validator makes sure it is set)."""
        if not self.viewer_rest_url:  # pragma: no cover - refused by _check
            raise ValueError("viewer_rest_url is required")
        return self.viewer_rest_url

    def destination(self) -> str:
        return self.move_destination_ae_title or self.viewer.ae_title
