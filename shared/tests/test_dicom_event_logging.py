"""pynetdicom's standard event-logging handlers are bound to new associations only while its logger shows
INFO (they format every PDU and DIMSE message, e.g. each pending C-MOVE response). No server."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from proxymage_shared.dicom import client
from pynetdicom import _config as pynetdicom_config
from pynetdicom import evt
from pynetdicom.association import Association


@pytest.fixture
def pynetdicom_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("pynetdicom")
    level, setting = logger.level, pynetdicom_config.LOG_HANDLER_LEVEL
    yield logger
    logger.setLevel(level)
    pynetdicom_config.LOG_HANDLER_LEVEL = setting


def _bound_on_a_new_association() -> bool:
    client._bind_event_logging()
    assoc = Association(client.AE(ae_title="PM_TEST"), "requestor")
    return bool(assoc.get_handlers(evt.EVT_DIMSE_RECV))


@pytest.mark.parametrize(("level", "bound"), [(logging.WARNING, False), (logging.INFO, True), (logging.DEBUG, True)])
def test_event_logging_is_bound_only_while_pynetdicom_logs_info(
    pynetdicom_logger: logging.Logger, level: int, bound: bool
) -> None:
    pynetdicom_logger.setLevel(level)
    assert _bound_on_a_new_association() is bound
