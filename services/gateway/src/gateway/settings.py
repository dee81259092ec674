"""Settings of the gateway service (environment prefix `PROXYMAGE_`, see proxymage_shared.settings)."""

from __future__ import annotations

from typing import Literal

from proxymage_shared.settings import ServiceSettings
from pydantic import BaseModel, ConfigDict, Field

Role = Literal["dcc", "viewer"]

# The local VIEWER Orthanc's explorer page for one study. Orthanc 1.10 names a study by the SHA-1 of
# "PatientID|StudyInstanceUID" in five groups of eight hex digits (see gateway.viewer); the explorer lists
# the study's series, each with an "Orthanc Web Viewer" button (the web-viewer 2.8 plugin opens series only).
DEFAULT_VIEWER_URL_TEMPLATE = "http://127.0.0.1:18043/app/explorer.html#study?uuid={orthanc_study_id}"


class ApiToken(BaseModel):
    """One bearer token, stored as the SHA-256 (hex) of the token: the token itself is never configured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Who holds it; written to the audit.")
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class Settings(ServiceSettings):
    service_name: str = "gateway"
    health_port: int = 8080
    # `[{"name": "dcc-demo", "role": "dcc", "sha256": "<hex>"}]`; no token configured means no /api access.
    api_tokens: tuple[ApiToken, ...] = ()
    # Placeholders: {study_instance_uid}, {orthanc_study_id}, {patient_id} (the MIRC PatientID), all URL-quoted.
    # A MedDREAM-style viewer: "https://meddream.example.org/meddream/?study={study_instance_uid}".
    viewer_url_template: str = DEFAULT_VIEWER_URL_TEMPLATE
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)
    # Events kept per stream for `Last-Event-ID` resume; an older id gets a `resync` event.
    sse_buffer_size: int = Field(default=256, ge=1, le=100_000)
    # Streams kept in memory (those without listeners are evicted first, oldest first).
    sse_max_streams: int = Field(default=10_000, ge=1)
    # Appended to the consumer groups: give each gateway instance its own (e.g. the pod name) so every
    # instance sees every event and can feed its own SSE clients; the read model's writes are idempotent.
    consumer_group_suffix: str = ""
    # Audit records are written in batches, off the request path.
    audit_batch_size: int = Field(default=200, ge=1)
    # "Today" for `within_months` filters is the date in this zone (the hospitals').
    timezone: str = "Europe/Paris"
    meetings_page_size: int = Field(default=200, ge=1, le=5000)
