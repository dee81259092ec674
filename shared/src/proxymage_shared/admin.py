"""Topic administration behind `proxymage topics` (the operator CLI, `proxymage_shared.ops.cli`, shipped in the
service images):

    proxymage topics [--partitions N] [--replication-factor R] [--prefix P]

creates every contract topic and its dead-letter topic (idempotent): the Helm chart's topics Job runs it
before the services start. Settings come from the environment and `PROXYMAGE_ENV_FILE`, like the services'
(Kafka bootstrap servers and security, topic prefix, partitions, replication factor).
"""

from __future__ import annotations

import asyncio

from proxymage_shared.kafka import ensure_topics
from proxymage_shared.settings import ServiceSettings
from proxymage_shared.topics import topic_specs


class AdminSettings(ServiceSettings):
    service_name: str = "admin"


def create_topics(
    settings: ServiceSettings,
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
    prefix: str | None = None,
) -> tuple[list[str], int]:
    """Creates the missing topics; returns the names created and how many topics there are in all.

    `None` takes the setting: PROXYMAGE_TOPIC_PARTITIONS, PROXYMAGE_TOPIC_REPLICATION_FACTOR,
    PROXYMAGE_TOPIC_PREFIX.
    """
    specs = topic_specs(
        settings.topic_partitions if partitions is None else partitions,
        prefix=settings.topic_prefix if prefix is None else prefix,
    )
    created = asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap_servers,
            specs,
            replication_factor=settings.topic_replication_factor if replication_factor is None else replication_factor,
            security=settings.kafka_security,
        )
    )
    return created, len(specs)


def report(created: list[str], total: int) -> str:
    return "\n".join(
        [f"{len(created)} topic(s) created, {total - len(created)} already there", *(f"  + {n}" for n in created)]
    )
