"""The chaos run's pure parts: the table, the PHI patterns, the malformed events, the consumer map, metrics."""

from __future__ import annotations

import os
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest
from proxymage_dev.chaos import malformed, phi
from proxymage_dev.chaos.dcc import parse_counter, person
from proxymage_dev.chaos.run import Plan
from proxymage_dev.chaos.scenarios import consumers_per_topic
from proxymage_dev.chaos.stack import ROOT
from proxymage_dev.chaos.table import Row, per_minute, render
from proxymage_dev.synthetic import BENCH_PATIENT, PATIENTS
from proxymage_shared import topics
from proxymage_shared.events import INBOUND_EVENT_TYPES, OUTCOME_EVENT_TYPES
from pydantic import ValidationError


def test_the_table_has_one_line_per_row_and_the_overall_verdict() -> None:
    rows = [Row("replay x3", "1 move/study", "2 moves", True), Row("MIRC down 20s", "<= 30s", "41.0s", False)]
    text = render(rows, "make chaos-fast: 300s")
    lines = text.splitlines()
    assert lines[0] == "make chaos-fast: 300s"
    assert lines[3].startswith("replay x3")
    assert lines[3].endswith("PASS")
    assert lines[4].startswith("MIRC down 20s")
    assert lines[4].endswith("FAIL")
    assert lines[-1] == "FAIL: 1/2 checks passed"
    assert render(rows[:1], "t").splitlines()[-1] == "PASS: 1/1 checks passed"
    assert render([], "t").splitlines()[-1].startswith("FAIL")  # nothing measured is no success


def test_log_rate_counts_a_short_outage_as_one_minute() -> None:
    assert per_minute(2, 10) == 2
    assert per_minute(30, 120) == 15
    assert per_minute(0, 60) == 0


def test_patient_patterns_find_names_and_birth_dates_in_any_spelling() -> None:
    patterns = phi.patient_patterns()
    hits = {
        line: [f.what for f in phi.scan("x.log", [line], patterns)]
        for line in (
            '{"event": "match", "name": "béranger-fictif"}',
            "C-FIND PatientName=BÉRANGER-FICTIF^Hélène",
            "birth 1956-04-12",
            "PatientBirthDate=19560412",
            "né le 12/04/1956",
        )
    }
    assert all(hits.values()), hits
    assert any(what.startswith("beranger_tours:") for what in hits["birth 1956-04-12"])


def test_patient_patterns_ignore_uids_placeholders_and_words_inside_words() -> None:
    patterns = phi.patient_patterns()
    clean = [
        "study_instance_uid=1.2.826.0.1.19560412.7",  # a date inside a UID is no birth date
        "Test CA generated",  # the benchmark patient's placeholder first name
        "PAULINE",  # a name inside another word
    ]
    assert phi.scan("x.log", clean, patterns) == []


def test_every_synthetic_patient_has_patterns_and_values_stay_out_of_their_names() -> None:
    patterns = phi.patient_patterns()
    for patient in (*PATIENTS, BENCH_PATIENT):
        assert any(name.startswith(f"{patient.key}:") for name in patterns)
    assert not any("FICTIF" in name.upper() for name in patterns)  # the report names kinds, never values


def test_body_patterns_keep_long_lines_but_not_greetings_or_bare_links() -> None:
    body = "Bonjour,\n\nUn dossier vous attend pour la RCP ORL du 12 mars 2027.\nhttps://dcc.example.test/x\n"
    patterns = phi.body_patterns([body])
    assert len(patterns) == 1
    assert phi.scan("x.log", ["... Un dossier vous attend pour la RCP ORL du 12 mars 2027. ..."], patterns)


def test_every_kind_of_malformed_event_fails_every_event_model() -> None:
    for topic in topics.CONTRACT_TOPICS:
        for kind, value in malformed.KINDS:
            with pytest.raises(ValidationError):
                {**INBOUND_EVENT_TYPES, **OUTCOME_EVENT_TYPES}[topic].model_validate_json(value)
            assert kind


def test_malformed_events_spread_over_every_topic_and_kind() -> None:
    events = list(malformed.malformed_events(1000, topics.INBOUND_TOPICS))
    assert len(events) == 1000
    assert {topic for topic, *_ in events} == set(topics.INBOUND_TOPICS)
    for topic in topics.INBOUND_TOPICS:
        assert {kind for t, _, kind, _ in events if t == topic} == {kind for kind, _ in malformed.KINDS}
    assert len({key for _, key, _, _ in events}) == 1000
    assert list(malformed.malformed_events(5, [])) == []


def test_consumers_are_counted_per_topic_from_the_group_names() -> None:
    groups = [
        "proxymage.identity-matcher.dcc.patient-enrolled.v1",
        "proxymage.gateway.dcc.patient-enrolled.v1",
        "proxymage.gateway.imaging.study-status.v1.blue",  # a gateway's consumer_group_suffix
        "someone-else.dcc.rcp-settings.v1",
    ]
    counts = consumers_per_topic(groups)
    assert counts[topics.PATIENT_ENROLLED] == 2
    assert counts[topics.STUDY_STATUS] == 1
    assert counts[topics.RCP_SETTINGS] == 0


def test_a_counter_is_read_from_the_metrics_text() -> None:
    text = (
        "# TYPE proxymage_fetcher_moves_total counter\n"
        'proxymage_fetcher_moves_total{kind="moved"} 3.0\n'
        'proxymage_fetcher_moves_total{kind="reused"} 7.0\n'
    )
    assert parse_counter(text, "proxymage_fetcher_moves_total", 'kind="moved"') == 3
    assert parse_counter(text, "proxymage_fetcher_moves_total", 'kind="cancelled"') == 0


def test_the_dcc_spells_the_patient_as_enrolments_do() -> None:
    lefaux = next(p for p in PATIENTS if p.key == "lefaux_married")
    assert person(lefaux) == {"birth_name": "D'EXEMPLE", "used_name": None, "first_name": "Marie-Claire",
                              "birth_date": "1961-09-30", "sex": "F"}  # fmt: skip


def test_the_fast_plan_is_a_subset_and_long_adds_the_ten_minute_outage() -> None:
    fast, full, long = Plan.of(fast=True, long=False), Plan.of(fast=False, long=False), Plan.of(fast=False, long=True)
    assert fast.kill_rounds < full.kill_rounds == 5
    assert fast.mirc_outages == (20,)
    assert full.mirc_outages == (120,)
    assert long.mirc_outages == (120, 600)
    assert fast.malformed == full.malformed == 1000


def test_email_bodies_are_read_from_the_mailbox(tmp_path: Path) -> None:
    message = EmailMessage()
    message["Subject"] = "Avis demandé"
    message.set_content("Un dossier vous attend pour la RCP ORL fictive de jeudi prochain.\n")
    (tmp_path / "1-1.eml").write_bytes(message.as_bytes())
    (tmp_path / "1-1.json").write_text("{}")
    bodies = phi.email_body_lines(tmp_path)
    assert len(bodies) == 1
    assert "Un dossier vous attend pour la RCP ORL fictive de jeudi prochain." in bodies[0]


def test_lib_sh_reads_the_env_file_named_by_proxymage_local_env(tmp_path: Path) -> None:
    """The deploy/local scripts on another stack: its ports, its var dir, and the services pointed at its file."""
    env_file = tmp_path / "other.env"
    env_file.write_text("PROXYMAGE_VAR_DIR=var/chaos\nPROXYMAGE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:23092\n")
    script = 'source deploy/local/lib.sh && echo "$PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS $PM_VAR $PROXYMAGE_ENV_FILE"'
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={**os.environ, "PROXYMAGE_LOCAL_ENV": str(env_file)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["127.0.0.1:23092", str(ROOT / "var" / "chaos"), str(env_file)]
    missing = subprocess.run(
        ["bash", "-c", "source deploy/local/lib.sh"],
        cwd=ROOT,
        env={**os.environ, "PROXYMAGE_LOCAL_ENV": "deploy/chaos/none.env"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode != 0
    assert "none.env not found" in missing.stderr
