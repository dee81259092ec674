"""DICOM errors carry typed values, not counts to parse back from a message."""

from __future__ import annotations

import pytest
from proxymage_shared.dicom import IncompleteMoveError, MoveResult
from proxymage_shared.errors import TransientError


def test_an_incomplete_move_carries_its_result_and_is_transient() -> None:
    result = MoveResult(status=0xB000, completed=37, failed=3, warning=0)
    with pytest.raises(TransientError) as raised:
        raise IncompleteMoveError("C-MOVE from MIRC: warning; 37 completed, 3 failed", result=result)
    assert isinstance(raised.value, IncompleteMoveError)
    assert (raised.value.result.completed, raised.value.result.failed, raised.value.result.complete) == (37, 3, False)
