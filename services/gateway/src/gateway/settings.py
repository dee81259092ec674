"""Settings of the gateway service (environment prefix `PROXYMAGE_`, see proxymage_shared.settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from proxymage_shared.mssante import SecureMailDomains
from proxymage_shared.settings import ServiceSettings
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

Role = Literal["dcc", "viewer"]

# The OHIF viewer the gateway serves (gateway.ohif) on one study, read through the gateway's DICOMweb path.
DEFAULT_VIEWER_URL_TEMPLATE = "{gateway_url}/viewer/viewer?StudyInstanceUIDs={study_instance_uid}"


def _contact_link(value: str) -> str:
    """Only a mail address or a web page may become the console's contact link (never `javascript:`)."""
    value = value.strip()
    if value and not value.startswith(("mailto:", "https://", "http://")):
        raise ValueError("the console's contact is a mailto: or http(s):// link, e.g. mailto:3c@chu.mssante.fr")
    return value


ContactLink = Annotated[str, AfterValidator(_contact_link)]


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
    # The gateway's base URL as the DCC's and the console's users reach it (links in REST, SSE and the console),
    # served at the domain's root (the built-in viewer's paths are /viewer/ and /dicom-web/). Required while the
    # viewer URL template uses {gateway_url} (the default): a link to 127.0.0.1 would reach nobody.
    public_url: str | None = None
    # Placeholders: {gateway_url} (public_url), {study_instance_uid}, {orthanc_study_id}, {patient_id} (the MIRC
    # PatientID), all URL-quoted. Default: the built-in OHIF viewer. A site with its own viewer sets its URL, e.g.
    # MedDREAM "https://meddream.example.org/meddream/?study={study_instance_uid}" (README, "Your own viewer").
    viewer_url_template: str = DEFAULT_VIEWER_URL_TEMPLATE
    # The viewer store's DICOMweb root (Orthanc's DICOMweb plugin), proxied read-only at /dicom-web/ for the
    # built-in viewer; unset: /dicom-web/ answers 503.
    viewer_dicomweb_url: str | None = None
    # The account the gateway uses at the viewer store's HTTP API, when the store asks for one (basic auth).
    viewer_dicomweb_username: str | None = None
    viewer_dicomweb_password: SecretStr | None = None
    # How long an access decision of the DICOMweb path is kept; every enrolment change drops them all anyway.
    viewer_access_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)
    # Events kept per stream for `Last-Event-ID` resume; an older id gets a `resync` event.
    sse_buffer_size: int = Field(default=256, ge=1, le=100_000)
    # Streams kept in memory (those without listeners are evicted first, oldest first).
    sse_max_streams: int = Field(default=10_000, ge=1)
    # Larger request bodies are answered 413 before anything parses them (gateway.hardening). The largest body
    # the API takes (a selection of 1000 UIDs, an enrolment of 500-character fields) is under 100 kB.
    max_body_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    # Appended to the consumer groups: give each gateway instance its own (e.g. the pod name) so every
    # instance sees every event and can feed its own SSE clients; the read model's writes are idempotent.
    consumer_group_suffix: str = ""
    # A read-model write that has no other write of its document waiting first waits this long for the parts
    # consumed from the other topics (gateway.coalesce): 0 writes at once.
    write_linger_ms: float = Field(default=1.0, ge=0, le=50)
    # Audit records are written in batches, off the request path.
    audit_batch_size: int = Field(default=200, ge=1)
    # Audit records not deleted earlier with their enrolment (retention_days after its meeting) or their meeting
    # are deleted after this many days: requests naming no enrolment (lists, refused tokens...).
    audit_retention_days: int = Field(default=365, ge=1, le=3650)
    # "Today" for `within_months` filters is the date in this zone (the hospitals').
    timezone: str = "Europe/Paris"
    meetings_page_size: int = Field(default=200, ge=1, le=5000)
    # Experts' addresses must be MSSanté's: the same setting as the expert-notifier's,
    # PROXYMAGE_SMTP__ALLOWED_DOMAINS (proxymage_shared.mssante), checked at entry by the console and the REST command.
    smtp: SecureMailDomains = SecureMailDomains()
    # The console's footer link "Contact" (the 3C's or the regional network's), a mailto: or http(s):// link,
    # e.g. PROXYMAGE_CONSOLE_CONTACT=mailto:3c@chu-exemple.mssante.fr; empty: no link, the help page names the 3C.
    console_contact: ContactLink = ""
    # The OHIF Viewer served at /viewer/ (gateway.ohif): the directory deploy/local/ohif.sh installs, e.g.
    # var/ohif/current (a relative path is relative to the working directory, the repository root for the
    # local stack). None, or a directory without index.html: /viewer/ answers 503.
    viewer_app_dir: Path | None = None
    # Personal sign-in of the console (OpenID Connect, authorization code + PKCE S256; gateway.oidc). Off while
    # oidc_issuer is unset. The provider (Pro Santé Connect, the region's IdP; deploy/local/oidc.sh locally) is
    # found through {issuer}/.well-known/openid-configuration; the gateway's callback is
    # {public_url}/console/oidc/callback. The ID token's `oidc_role_claim` says the role: 3c, medecin or lecture
    # (anything else: no access).
    oidc_issuer: str | None = None
    oidc_client_id: str = "proxymage-console"
    oidc_client_secret: SecretStr | None = None  # None: a public client (PKCE alone)
    oidc_scopes: str = "openid profile proxymage"
    oidc_role_claim: str = "proxymage_role"
    # Signs the session cookies (HMAC-SHA256): a long random secret, the same on every replica. None: one drawn
    # at start (sessions end at each restart and are not shared between replicas).
    oidc_session_secret: SecretStr | None = None
    oidc_session_hours: float = Field(default=12.0, gt=0, le=24)

    @model_validator(mode="after")
    def _public_url_when_linked(self) -> Settings:
        if "{gateway_url}" in self.viewer_url_template and not self.public_url:
            raise ValueError(
                "set PROXYMAGE_PUBLIC_URL (the gateway's address as users reach it, e.g. https://proxymage.example.org):"
                " the viewer links are built from it"
            )
        return self

    @model_validator(mode="after")
    def _public_url_for_sign_in(self) -> Settings:
        if self.oidc_issuer and not self.public_url:
            raise ValueError("set PROXYMAGE_PUBLIC_URL: the OpenID Connect callback is built from it")
        return self
