"""Kafka topic names: the one place they are spelt (ARCHITECTURE.md "Topics", CONTRACT.md).

Every topic is versioned (`.v1`); a breaking change gets a new topic, never a new meaning for an old one.
Keys: each topic's messages are keyed by the id named in `TOPIC_KEYS`, so one enrolment's (or meeting's,
or RCP's) events stay in order on one partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Inbound: published by the DCC (or by the gateway's REST commands on its behalf).
RCP_SETTINGS: Final = "dcc.rcp-settings.v1"
MEETING_EXPERTS: Final = "dcc.meeting-experts.v1"
PATIENT_ENROLLED: Final = "dcc.patient-enrolled.v1"
STUDIES_SELECTED: Final = "dcc.studies-selected.v1"
STUDY_REMOVED: Final = "dcc.study-removed.v1"
IMAGING_REFRESH: Final = "dcc.imaging-refresh.v1"
ENROLMENT_WITHDRAWN: Final = "dcc.enrolment-withdrawn.v1"  # CONTRACT v1.1: the patient is taken off the meeting

# Outcomes: published by Proxymage's services.
IDENTITY_RESOLVED: Final = "identity.resolved.v1"
IMAGING_CATALOGUED: Final = "imaging.catalogued.v1"
STUDY_STATUS: Final = "imaging.study-status.v1"
EXPERTISE_NOTIFICATION: Final = "expertise.notification.v1"

DLQ_SUFFIX: Final = ".dlq"
# Internal: what operators did with each dead letter (`proxymage dlq replay|purge`), keyed
# "<dlq topic>:<partition>:<offset>", latest record per key kept forever (compacted, one partition).
DLQ_ACTIONS: Final = "proxymage.dlq-actions.v1"

INBOUND_TOPICS: Final = (
    RCP_SETTINGS,
    MEETING_EXPERTS,
    PATIENT_ENROLLED,
    STUDIES_SELECTED,
    STUDY_REMOVED,
    IMAGING_REFRESH,
    ENROLMENT_WITHDRAWN,
)
OUTCOME_TOPICS: Final = (IDENTITY_RESOLVED, IMAGING_CATALOGUED, STUDY_STATUS, EXPERTISE_NOTIFICATION)
CONTRACT_TOPICS: Final = INBOUND_TOPICS + OUTCOME_TOPICS

TOPIC_KEYS: Final[dict[str, str]] = {
    RCP_SETTINGS: "rcp_id",
    MEETING_EXPERTS: "meeting_id",
    PATIENT_ENROLLED: "enrolment_id",
    STUDIES_SELECTED: "enrolment_id",
    STUDY_REMOVED: "enrolment_id",
    IMAGING_REFRESH: "enrolment_id",
    ENROLMENT_WITHDRAWN: "enrolment_id",
    IDENTITY_RESOLVED: "enrolment_id",
    IMAGING_CATALOGUED: "enrolment_id",
    STUDY_STATUS: "enrolment_id",
    EXPERTISE_NOTIFICATION: "enrolment_id",
}

# Latest-value topics: Kafka keeps the last message per key forever, so a service that starts late (or
# replays) still learns every RCP's filters and every meeting's experts.
COMPACTED_TOPICS: Final = frozenset({RCP_SETTINGS, MEETING_EXPERTS})


def dead_letter_topic(topic: str) -> str:
    """`<input topic>.dlq`: where a consumer parks a message it cannot process, with the reason."""
    return topic + DLQ_SUFFIX


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic is created: by code (`proxymage topics`, or a service at start), never by a broker default."""

    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None

    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config


# Dead letters are kept a long time: an operator must be able to inspect and replay them.
DLQ_RETENTION_MS: Final = 90 * 24 * 3600 * 1000


def dlq_actions_spec(prefix: str = "") -> TopicSpec:
    """The operators' record of dead letters replayed or purged: a handful of small records, so one partition
    (one total order of the operators' actions) whatever the contract topics have."""
    return TopicSpec(prefix + DLQ_ACTIONS, 1, compacted=True)


def topic_specs(partitions: int = 6, prefix: str = "") -> list[TopicSpec]:
    """Every topic of the contract plus its dead-letter topic, and the dead letters' action record; `prefix`
    isolates tests from each other."""
    specs: list[TopicSpec] = []
    for topic in CONTRACT_TOPICS:
        specs.append(TopicSpec(prefix + topic, partitions, compacted=topic in COMPACTED_TOPICS))
        specs.append(TopicSpec(prefix + dead_letter_topic(topic), partitions, retention_ms=DLQ_RETENTION_MS))
    specs.append(dlq_actions_spec(prefix))
    return specs
