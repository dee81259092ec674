"""DIMSE status codes and what they mean for us: success, pending, or a transient or permanent failure.

Tables from DICOM PS3.4 (Query/Retrieve service class): C-FIND statuses §C.4.1.1.4, C-MOVE statuses
§C.4.2.1.5, and the general statuses of PS3.7 Annex C. `classify` is the one place a status becomes an
outcome (CONVENTIONS.md: one function classifies, after adit's dimse_connector).
"""

from __future__ import annotations

from enum import Enum
from typing import Final


class Outcome(Enum):
    SUCCESS = "success"
    PENDING = "pending"
    WARNING = "warning"  # the request completed, but not entirely (e.g. some sub-operations failed)
    CANCELLED = "cancelled"
    TRANSIENT = "transient"  # may succeed later: resources, processing failures
    PERMANENT = "permanent"  # will fail again: the request itself is refused


SUCCESS: Final = 0x0000
PENDING: Final = 0xFF00
PENDING_WITH_WARNINGS: Final = 0xFF01  # C-FIND: optional keys not supported
CANCEL: Final = 0xFE00
SUB_OPERATIONS_WARNING: Final = 0xB000  # C-MOVE: one or more sub-operations failed
MOVE_DESTINATION_UNKNOWN: Final = 0xA801

# status -> (outcome, meaning) — PS3.4 §C.4.1.1.4 (C-FIND) and §C.4.2.1.5 (C-MOVE)
STATUSES: Final[dict[int, tuple[Outcome, str]]] = {
    0x0000: (Outcome.SUCCESS, "success"),
    0xFF00: (Outcome.PENDING, "pending"),
    0xFF01: (Outcome.PENDING, "pending, optional keys not supported"),
    0xFE00: (Outcome.CANCELLED, "cancelled"),
    0xB000: (Outcome.WARNING, "sub-operations complete, one or more failures or warnings"),
    0xA700: (Outcome.TRANSIENT, "refused: out of resources"),
    0xA701: (Outcome.TRANSIENT, "refused: out of resources, unable to calculate the number of matches"),
    0xA702: (Outcome.TRANSIENT, "refused: out of resources, unable to perform sub-operations"),
    0xA801: (Outcome.PERMANENT, "refused: move destination unknown"),
    0xA900: (Outcome.PERMANENT, "identifier does not match SOP class"),
    0x0122: (Outcome.PERMANENT, "SOP class not supported"),
    0x0124: (Outcome.PERMANENT, "refused: not authorised"),
    0x0210: (Outcome.TRANSIENT, "duplicate invocation"),
    0x0211: (Outcome.PERMANENT, "unrecognised operation"),
    0x0212: (Outcome.PERMANENT, "mistyped argument"),
    0x0213: (Outcome.TRANSIENT, "resource limitation"),
}


def classify(status: int) -> tuple[Outcome, str]:
    """What a DIMSE status means for us. Unknown codes follow the ranges of PS3.7 Annex C."""
    if status in STATUSES:
        return STATUSES[status]
    if 0xC000 <= status <= 0xCFFF:
        # "Unable to process": the PACS failed on its side; a later try may work.
        return Outcome.TRANSIENT, f"failed: unable to process (0x{status:04X})"
    if 0xA000 <= status <= 0xAFFF:
        return Outcome.PERMANENT, f"refused (0x{status:04X})"
    if 0xB000 <= status <= 0xBFFF:
        return Outcome.WARNING, f"warning (0x{status:04X})"
    return Outcome.TRANSIENT, f"unexpected status 0x{status:04X}"
