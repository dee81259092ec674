from __future__ import annotations

from proxymage_shared import topics


def test_every_topic_has_a_dead_letter_topic_with_long_retention() -> None:
    specs = {spec.name: spec for spec in topics.topic_specs(partitions=3, prefix="t1.")}
    for topic in topics.CONTRACT_TOPICS:
        assert f"t1.{topic}" in specs
        dlq = specs[f"t1.{topic}.dlq"]
        assert dlq.config()["retention.ms"] == str(topics.DLQ_RETENTION_MS)
        assert dlq.partitions == 3


def test_latest_value_topics_are_compacted_and_event_topics_are_not() -> None:
    specs = {spec.name: spec for spec in topics.topic_specs()}
    assert specs[topics.RCP_SETTINGS].config()["cleanup.policy"] == "compact"
    assert specs[topics.MEETING_EXPERTS].config()["cleanup.policy"] == "compact"
    assert specs[topics.PATIENT_ENROLLED].config()["cleanup.policy"] == "delete"
    assert specs[topics.dead_letter_topic(topics.RCP_SETTINGS)].config()["cleanup.policy"] == "delete"
