"""structlog JSON logging with patient data masked out.

Logs carry ids (service, event_id, enrolment_id, study_instance_uid: the contract's field names, see "Log keys"
in docs/conventions.md) and outcomes, never a patient's name or birth date, nor an e-mail body.
`mask_patient_data` enforces it whatever a call site passes: it walks the event dict (nested dicts, lists,
pydantic models) and replaces the value of every sensitive key.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import faststream  # noqa: F401  (its loggers exist, with their own handlers, before we take them over)
import structlog
from pydantic import BaseModel
from structlog.typing import FilteringBoundLogger

from proxymage_shared.dependency_log import DependencyNoiseFilter, Outages

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


# Levels of libraries' loggers (and their children) unless `levels` says otherwise. pynetdicom logs every PDU
# and dataset at DEBUG/INFO, identifiers included, and httpx/httpcore every URL (a DICOMweb query names a
# PatientID): keep them to warnings. The others are chatty at INFO (FastStream logs every message it handles).
LIBRARY_LEVELS: Final[Mapping[str, str]] = {
    "pynetdicom": "WARNING",
    "aiokafka": "WARNING",
    "kafka": "WARNING",
    "pymongo": "WARNING",
    "uvicorn": "WARNING",
    "faststream": "WARNING",
    "httpx": "WARNING",
    "httpcore": "WARNING",
    "asyncio": "WARNING",
    "aiosmtplib": "WARNING",
}


def _level(name: str) -> int:
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {name!r}")
    return level


def _emit_outage(level: int, event: str, fields: dict[str, Any]) -> None:
    get_logger("proxymage_shared.dependencies").log(level, event, **fields)


# The process's dependency outages (dependency_log.py): fed by the noise filter below and by our own retry
# loops and readiness checks, so that each outage is logged once, reminded once a minute, and ended once.
OUTAGES: Final = Outages(_emit_outage)


def configure_logging(
    service: str,
    level: str = "INFO",
    json: bool = True,
    stream: TextIO | None = None,
    levels: Mapping[str, str] | None = None,
) -> None:
    """Configures structlog (and the stdlib loggers of libraries) to write one JSON object per line.

    `stream` defaults to standard error (tests pass a file to inspect what a service logged). `levels` sets
    the level of named stdlib loggers (e.g. `{"aiokafka": "DEBUG"}`), over `LIBRARY_LEVELS`.
    """
    output = stream or sys.stderr
    log_level = _level(level)
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

    # Libraries log through the stdlib: route them through the same masking and rendering, and collapse
    # their per-attempt connection errors into outages.
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(DependencyNoiseFilter(OUTAGES))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    configured = {name: max(log_level, _level(value)) for name, value in LIBRARY_LEVELS.items()}
    configured.update({name: _level(value) for name, value in (levels or {}).items()})
    for name, value in configured.items():
        logging.getLogger(name).setLevel(value)
    # FastStream gives its loggers their own coloured handler on standard output/error and stops them
    # propagating (faststream/_internal/logger/logging.py, at import): hand them back to the root's handler.
    for name in list(logging.root.manager.loggerDict):
        library = logging.getLogger(name)
        if name.split(".", 1)[0] in configured and library.handlers:
            library.handlers.clear()
            library.propagate = True


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
