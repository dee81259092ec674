"""Settings of the expert-notifier service (environment prefix `PROXYMAGE_`, see proxymage_shared.settings).

For a real MSSanté operator (see the README): `PROXYMAGE_SMTP__HOST=<the operator's relay>`,
`PROXYMAGE_SMTP__PORT=587`, `PROXYMAGE_SMTP__CLIENT_CERT_FILE` / `PROXYMAGE_SMTP__CLIENT_KEY_FILE` (the
application mailbox's certificate from the health PKI, IGC Santé), `PROXYMAGE_SMTP__CA_FILE` (the CA bundle
that signed the relay's certificate), `PROXYMAGE_SMTP__ALLOWED_DOMAINS='["*.mssante.fr"]'` (the default),
`PROXYMAGE_MAIL_FROM` (the application mailbox), `PROXYMAGE_DCC_REGISTRATION_URL`.
Relative paths are resolved from the working directory (the repository root for the local stack).
"""

from __future__ import annotations

import zoneinfo
from pathlib import Path

from proxymage_shared.mssante import SecureMailDomains
from proxymage_shared.retry import DEFAULT_DELAYS_SECONDS
from proxymage_shared.settings import ServiceSettings, TimeZoneName
from pydantic import Field, model_validator


class SmtpEndpoint(SecureMailDomains):
    """The secure-mail relay (MSSanté in production): STARTTLS required, TLS 1.2+, client certificate.
    `allowed_domains` (proxymage_shared.mssante) is the recipients' rule, shared with the gateway."""

    host: str = "127.0.0.1"
    port: int = Field(default=587, ge=1, le=65535)
    # CA bundle that verifies the relay's certificate; None = the system's trust store.
    ca_file: Path | None = None
    # The sender's certificate and key (MSSanté authenticates applications by certificate, not AUTH).
    # Without them the relay refuses the TLS handshake: the notifier reports it and never falls back to clear.
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    # Name sent in EHLO; None = this host's name (socket.gethostname()).
    helo_name: str | None = None
    # Per SMTP command, and for one whole message (connect, STARTTLS, envelope, data, quit).
    command_timeout_seconds: float = Field(default=30.0, gt=0)
    message_timeout_seconds: float = Field(default=90.0, gt=0)


class Settings(ServiceSettings):
    service_name: str = "expert-notifier"
    health_port: int = 8103
    smtp: SmtpEndpoint = SmtpEndpoint()
    # Headers and text of the expertise e-mail (SEED.md §6).
    mail_from: str = "Proxymage <proxymage@proxymage.invalid>"
    reply_to: str | None = None
    dcc_registration_url: str = "https://dcc.invalid/inscription"
    # Right-hand side of Message-IDs; empty = the domain of `mail_from`.
    message_id_domain: str = ""
    # Transient failures (connection, timeout, 4xx) and TLS/certificate problems are retried on this
    # schedule (the last delay repeats) until the end of the meeting day: an expertise request is never
    # sent after the meeting (CONTRACT v1.1), it ends `not_sent` / `failed`.
    retry_delays_seconds: tuple[float, ...] = DEFAULT_DELAYS_SECONDS
    # The time zone of the meeting dates: the meeting day ends at midnight there (IANA name).
    timezone: TimeZoneName = "Europe/Paris"
    # How often the sender looks for due notifications (it is also woken at once by new ones).
    send_poll_seconds: float = Field(default=2.0, gt=0)
    send_workers: int = Field(default=2, ge=1)
    # A claimed notification is owned this long: longer than one message may take, so that no other
    # instance sends it meanwhile; a dead instance's claim is taken over after it.
    send_lease_seconds: float = Field(default=300.0, gt=0)
    # Outcomes recorded but not yet published (Kafka was down) are published again after this delay.
    republish_after_seconds: float = Field(default=10.0, gt=0)
    # What the notifier keeps of an enrolment (facts, notifications) is deleted `retention_days` after its
    # meeting date (ServiceSettings, proxymage_shared.retention). Facts about an enrolment whose enrolled
    # event never came (no meeting date) are deleted this many days after they were last recorded.
    enrolment_retention_days: float = Field(default=30.0, gt=0)
    maintenance_interval_seconds: float = Field(default=60.0, gt=0)

    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> Settings:
        if self.send_lease_seconds <= self.smtp.message_timeout_seconds:
            raise ValueError("send_lease_seconds must exceed smtp.message_timeout_seconds (else two sends may race)")
        if not self.retry_delays_seconds:
            raise ValueError("retry_delays_seconds needs at least one delay")
        return self
