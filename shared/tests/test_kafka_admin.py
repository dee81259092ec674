"""The admin client (topic creation) gets the same Kafka security settings as the services' brokers; every client
gets every bootstrap server of a cluster."""

from __future__ import annotations

from proxymage_shared.kafka import admin_security_options, all_partitions_led, bootstrap_servers, create_broker
from proxymage_shared.settings import KafkaSecurity, ServiceSettings
from proxymage_shared.topics import TopicSpec
from pydantic import SecretStr


def test_plaintext_needs_no_admin_options() -> None:
    assert admin_security_options(KafkaSecurity()) == {}


def test_sasl_ssl_reaches_the_admin_client_with_its_credentials_and_tls() -> None:
    options = admin_security_options(
        KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="proxymage",
            sasl_password=SecretStr("s3cret"),
        )
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "proxymage"
    assert options["sasl_plain_password"] == "s3cret"
    assert options["ssl_context"] is not None


def test_ssl_without_sasl_sends_no_credentials() -> None:
    options = admin_security_options(KafkaSecurity(protocol="SSL"))
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"] is not None
    assert "sasl_mechanism" not in options


def test_topic_creation_at_start_and_its_replication_factor_are_settings() -> None:
    settings = ServiceSettings(create_topics_at_start=False, topic_replication_factor=3)
    assert settings.create_topics_at_start is False
    assert settings.topic_replication_factor == 3
    assert ServiceSettings().create_topics_at_start is True


def test_a_comma_separated_bootstrap_list_gives_every_server() -> None:
    assert bootstrap_servers("127.0.0.1:19192, 127.0.0.1:19193,127.0.0.1:19194,") == [
        "127.0.0.1:19192",
        "127.0.0.1:19193",
        "127.0.0.1:19194",
    ]
    assert bootstrap_servers("kafka:9092") == ["kafka:9092"]


def test_the_services_broker_bootstraps_from_each_server_of_a_cluster() -> None:
    # FastStream took the string for one host named "a:1,b:2,c" on port 3. Its consumers are built from this
    # partial (FastStream 0.6+ internals; the cluster test covers the same through a real start).
    broker = create_broker(ServiceSettings(kafka_bootstrap_servers="k1:9092,k2:9092,k3:9092"))
    assert broker.config.broker_config.builder.keywords["bootstrap_servers"] == ["k1:9092", "k2:9092", "k3:9092"]


def _described(name: str, leaders: list[int], error_code: int = 0) -> dict[str, object]:
    partitions = [{"error_code": 0 if leader >= 0 else 5, "partition": index, "leader": leader}
                  for index, leader in enumerate(leaders)]  # fmt: skip
    return {"error_code": error_code, "topic": name, "partitions": partitions}


def test_created_topics_are_ready_only_when_every_partition_has_a_leader() -> None:
    specs = [TopicSpec("a", 2), TopicSpec("b", 1)]
    assert all_partitions_led([_described("a", [1, 1]), _described("b", [1])], specs)
    assert not all_partitions_led([_described("a", [1, -1]), _described("b", [1])], specs)  # no leader yet
    assert not all_partitions_led([_described("a", [1]), _described("b", [1])], specs)  # a partition missing
    assert not all_partitions_led([_described("a", [1, 1]), _described("b", [], error_code=3)], specs)  # unknown
    assert not all_partitions_led([_described("a", [1, 1])], specs)
