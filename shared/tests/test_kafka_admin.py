"""The admin client (topic creation) gets the same Kafka security settings as the services' brokers."""

from __future__ import annotations

from proxymage_shared.kafka import admin_security_options
from proxymage_shared.settings import KafkaSecurity, ServiceSettings
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
