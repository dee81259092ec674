"""Settings shared by every service (pydantic-settings, environment prefix `PROXYMAGE_`).

Values come from the environment, then from the dotenv file named by `PROXYMAGE_ENV_FILE` (the local stack
points it at `deploy/local/local.env`, the same file its scripts source). Nested values use `__`, e.g.
`PROXYMAGE_MIRC__PORT=11112`. Secrets may be given as files (`*_file` settings) so they stay out of the
environment of other processes.
"""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from proxymage_shared import retry

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _known_time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Europe/Paris)") from error
    return value


# An IANA time zone name, checked when the settings load: refused at start-up, not at the first meeting.
TimeZoneName = Annotated[str, AfterValidator(_known_time_zone)]


def _env_file() -> str | None:
    return os.environ.get("PROXYMAGE_ENV_FILE") or None


class DicomPeer(BaseModel):
    """A remote DICOM application entity (a PACS or the viewer's store)."""

    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)
    # The peer's association budget: at most this many concurrent associations from all of Proxymage (every
    # replica of every service: give each the same value), e.g. PROXYMAGE_MIRC__MAX_ASSOCIATIONS=4.
    max_associations: int = Field(default=4, ge=1, le=64)


class KafkaSecurity(BaseModel):
    """Kafka client security, as aiokafka names it. PLAINTEXT is for the loopback stack only."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class ServiceSettings(BaseSettings):
    """The base of every service's settings: Kafka, MongoDB, logging, health server."""

    model_config = SettingsConfigDict(
        env_prefix="PROXYMAGE_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    service_name: str = "proxymage"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security: KafkaSecurity = KafkaSecurity()
    # Isolates a deployment's (or a test's) topics and consumer groups from another's on the same cluster.
    topic_prefix: str = ""
    # Partitions of the topics a service creates at start when they are missing (`proxymage topics` in
    # production, with the cluster's replication factor).
    topic_partitions: int = Field(default=6, ge=1, le=256)
    # Replicas of each partition of the topics created at start (3 on a 3-broker cluster).
    topic_replication_factor: int = Field(default=1, ge=1, le=16)
    # Whether a service creates its missing topics at start. Off where a Job (Helm) or the cluster's operators
    # create them, or where the service's Kafka user may not create topics.
    create_topics_at_start: bool = True
    mongo_url: SecretStr = SecretStr("mongodb://127.0.0.1:27017/")
    mongo_database: str = ""
    log_level: LogLevel = "INFO"
    log_json: bool = True
    # Levels of named stdlib loggers over logging.LIBRARY_LEVELS, e.g. PROXYMAGE_LOG_LEVELS='{"aiokafka": "DEBUG"}'
    # (pynetdicom and httpx below WARNING log patient identifiers).
    log_levels: dict[str, LogLevel] = Field(default_factory=dict)
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=0, ge=0, le=65535)
    # Consumers per subscribed topic in one process (messages of different partitions handled concurrently).
    consumer_concurrency: int = Field(default=4, ge=1, le=64)
    # Bounded in-handler retries of transient failures before a message is dead-lettered.
    handler_max_attempts: int = Field(default=retry.DEFAULT_MAX_ATTEMPTS, ge=1)
    handler_retry_base_seconds: float = Field(default=retry.DEFAULT_BASE_SECONDS, gt=0)
    handler_retry_max_seconds: float = Field(default=retry.DEFAULT_MAX_SECONDS, gt=0)
    # Retention (CONTRACT v1.1): everything held about an enrolment is deleted this many days after its meeting
    # date (a date in `retention_timezone`), by each service's periodic sweep (proxymage_shared.retention).
    retention_days: int = Field(default=30, ge=1, le=3650)
    retention_sweep_seconds: float = Field(default=3600.0, gt=0)
    retention_timezone: TimeZoneName = "Europe/Paris"

    def database_name(self) -> str:
        return self.mongo_database or f"proxymage_{self.service_name.replace('-', '_')}"

    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    def consumer_group(self) -> str:
        return f"{self.topic_prefix}proxymage.{self.service_name}"


class DicomServiceSettings(ServiceSettings):
    """The base of the services that open DICOM associations: where their shared association budget lives."""

    # The database of the per-PACS association budgets, shared by every service (the budget spans services).
    pacs_budget_database: str = "proxymage_pacs_budget"
    # A held slot's lease, renewed while its association lives; a crashed process's slots free after this.
    pacs_budget_lease_seconds: float = Field(default=15.0, gt=0)
    # How long a request waits for a free slot before failing as transient (then retried as any PACS error).
    pacs_budget_wait_seconds: float = Field(default=60.0, gt=0)


S = TypeVar("S", bound="ServiceSettings")


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Builds settings from the environment and the env file; `overrides` win (tests use them)."""
    return cls(_env_file=_env_file(), **overrides)
