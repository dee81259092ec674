"""No patient names, birth dates or e-mail bodies in logs, whatever a call site passes."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from contextlib import redirect_stderr

import pytest
import structlog
from proxymage_shared.events import Patient
from proxymage_shared.logging import MASK, configure_logging, get_logger, mask_patient_data


def test_masks_sensitive_keys_at_any_depth() -> None:
    event = {
        "event": "handled",
        "enrolment_id": "enr-1",
        "patient": {"birth_name": "FICTIF", "first_name": "Zoé"},
        "candidates": [{"PatientName": "FICTIF^Zoé", "PatientBirthDate": "19560412", "patient_id": "T1"}],
        "email": {"subject": "Demande", "body": "Le dossier de Mme FICTIF"},
        "Birth-Date": "1956-04-12",
    }
    masked = mask_patient_data(None, "info", event)
    assert masked["enrolment_id"] == "enr-1"
    assert masked["patient"] == MASK
    assert masked["candidates"] == [{"PatientName": MASK, "PatientBirthDate": MASK, "patient_id": "T1"}]
    assert masked["email"] == {"subject": "Demande", "body": MASK}
    assert masked["Birth-Date"] == MASK
    assert "FICTIF" not in json.dumps(masked)


def test_masks_pydantic_models_passed_as_values() -> None:
    patient = Patient(
        birth_name="SECRETNOM", used_name=None, first_name="Zoé", birth_date=dt.date(1956, 4, 12), sex="F"
    )
    masked = mask_patient_data(None, "info", {"event": "x", "identity": patient})
    assert "SECRETNOM" not in json.dumps(masked)
    assert masked["identity"]["sex"] == "F"


def test_configured_logging_writes_json_without_patient_data() -> None:
    stream = io.StringIO()
    with redirect_stderr(stream):
        configure_logging("unit-test", "INFO", json=True)
        get_logger("t").info("enrolled", enrolment_id="enr-9", birth_name="SECRETNOM", first_name="Zoé")
        logging.getLogger("some.library").warning("library line", extra={"x": 1})
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    ours = next(line for line in lines if line.get("event") == "enrolled")
    assert ours["service"] == "unit-test"
    assert ours["enrolment_id"] == "enr-9"
    assert ours["birth_name"] == MASK
    assert "SECRETNOM" not in stream.getvalue()
    assert any(line.get("event") == "library line" for line in lines)
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_library_loggers_are_our_json_with_their_own_levels_and_connection_errors_collapse() -> None:
    import faststream  # noqa: F401  (installs FastStream's coloured handler, which configure_logging removes)

    stream = io.StringIO()
    configure_logging("unit-test", "INFO", json=True, stream=stream, levels={"aiokafka.consumer": "ERROR"})
    try:
        logging.getLogger("faststream").warning("Auto create topics is disabled.")
        logging.getLogger("faststream.proxymage").info("a message handled")  # faststream: WARNING by default
        logging.getLogger("aiokafka.consumer.fetcher").warning("below the configured ERROR")
        for _ in range(50):
            logging.getLogger("aiokafka").error("Unable connect to node with id %s: %s", 1, "refused")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["event"] for line in lines] == ["Auto create topics is disabled.", "dependency_down"]
        assert lines[0]["logger"] == "faststream"
        assert lines[1]["dependency"] == "kafka"
        assert lines[1]["level"] == "warning"
        assert lines[1]["service"] == "unit-test"
        assert not logging.getLogger("faststream").handlers
        assert logging.getLogger("faststream").propagate
    finally:
        from proxymage_shared.logging import OUTAGES

        OUTAGES.up("kafka")
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def test_per_logger_levels_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxymage_shared.settings import ServiceSettings, load_settings

    monkeypatch.setenv("PROXYMAGE_LOG_LEVELS", '{"aiokafka": "DEBUG", "pymongo": "ERROR"}')
    assert load_settings(ServiceSettings).log_levels == {"aiokafka": "DEBUG", "pymongo": "ERROR"}
    monkeypatch.setenv("PROXYMAGE_LOG_LEVELS", '{"aiokafka": "LOUD"}')
    with pytest.raises(ValueError, match="log_levels"):
        load_settings(ServiceSettings)
