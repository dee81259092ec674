"""`proxymage topics` (the Helm chart's topics Job): settings by default, its options win."""

from __future__ import annotations

from typing import Any

import pytest
from proxymage_shared import admin
from proxymage_shared.ops.cli import app
from proxymage_shared.settings import KafkaSecurity
from proxymage_shared.topics import DLQ_ACTIONS, TopicSpec
from typer.testing import CliRunner


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def ensure_topics(
        bootstrap_servers: str, specs: list[TopicSpec], *, replication_factor: int, security: KafkaSecurity
    ) -> list[str]:
        seen.append({"servers": bootstrap_servers, "specs": specs, "rf": replication_factor, "security": security})
        return [specs[0].name]

    monkeypatch.setattr(admin, "ensure_topics", ensure_topics)
    return seen


def test_the_helm_jobs_arguments_override_the_settings(
    calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    monkeypatch.setenv("PROXYMAGE_KAFKA_SECURITY__PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PROXYMAGE_TOPIC_PREFIX", "site-a.")
    result = CliRunner().invoke(app, ["topics", "--partitions", "12", "--replication-factor", "3"])
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert call["servers"] == "k1:9093,k2:9093"
    assert call["security"].protocol == "SASL_SSL"
    assert call["rf"] == 3
    assert {spec.partitions for spec in call["specs"] if not spec.name.endswith(DLQ_ACTIONS)} == {12}
    assert all(spec.name.startswith("site-a.") for spec in call["specs"])
    out = result.output
    assert out.startswith(f"1 topic(s) created, {len(call['specs']) - 1} already there\n")
    assert f"  + {call['specs'][0].name}" in out


def test_without_options_the_settings_decide(calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYMAGE_TOPIC_PARTITIONS", "4")
    monkeypatch.setenv("PROXYMAGE_TOPIC_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("PROXYMAGE_TOPIC_PREFIX", "")
    assert CliRunner().invoke(app, ["topics", "--prefix", "t."]).exit_code == 0
    (call,) = calls
    assert call["rf"] == 2
    assert {spec.partitions for spec in call["specs"] if not spec.name.endswith(DLQ_ACTIONS)} == {4}
    assert all(spec.name.startswith("t.") for spec in call["specs"])


def test_a_command_is_required() -> None:
    assert CliRunner().invoke(app, []).exit_code != 0
