"""structlog JSON logging with patient data masked out.

Logs carry ids (service, event_id, enrolment_id, study_uid) and outcomes, never a patient's name or birth
date, nor an e-mail body. `mask_patient_data` enforces it whatever a call site passes: it walks the event
dict (nested dicts, lists, pydantic models) and replaces the value of every sensitive key.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import structlog
from pydantic import BaseModel
from structlog.typing import FilteringBoundLogger

MASK: Final = "[masked]"

# Compared case-insensitively, with `-`/spaces as `_`: covers our event fields and DICOM keywords.
SENSITIVE_KEYS: Final = frozenset(
    {
        "patient",
        "patient_name",
        "patientname",
        "patients_name",
        "patient_birth_name",
        "patientbirthname",
        "birth_name",
        "used_name",
        "first_name",
        "given_name",
        "family_name",
        "birth_date",
        "patient_birth_date",
        "patientbirthdate",
        "date_of_birth",
        "dob",
        "body",
        "email_body",
        "text_body",
        "html_body",
        "mail_body",
        "message_body",
        "html",
        "plain_text",
    }
)


def _is_sensitive(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_").replace(" ", "_") in SENSITIVE_KEYS


def _masked(value: Any) -> Any:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {key: MASK if _is_sensitive(key) else _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(item) for item in value]
    return value


def mask_patient_data(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: masks sensitive keys anywhere in the event dict."""
    for key, value in list(event_dict.items()):
        event_dict[key] = MASK if _is_sensitive(key) else _masked(value)
    return event_dict


def configure_logging(service: str, level: str = "INFO", json: bool = True, stream: TextIO | None = None) -> None:
    """Configures structlog (and the stdlib loggers of libraries) to write one JSON object per line.

    `stream` defaults to standard error (tests pass a file to inspect what a service logged).
    """
    output = stream or sys.stderr
    log_level = getattr(logging, level.upper(), logging.INFO)
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_patient_data,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(log_level),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)

    # Libraries log through the stdlib: route them through the same masking and rendering.
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    # pynetdicom logs every PDU and dataset at DEBUG/INFO, identifiers included, and httpx/httpcore every URL
    # (a DICOMweb query names a PatientID): keep them to warnings.
    for noisy in ("pynetdicom", "aiokafka", "kafka", "pymongo", "uvicorn.access", "faststream", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(log_level, logging.WARNING))


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
