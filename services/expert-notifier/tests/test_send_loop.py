"""The expert-notifier's send loop (`handlers.Handlers.send_loop`) with in-memory fakes: once a round succeeds
again after failed ones (MongoDB back), the outage it reported ends and the e-mail that waited is sent. No server.
The failing rounds alone are in test_handlers.py."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from expert_notifier.ports import SlotRecord
from proxymage_dev.testing import eventually
from proxymage_shared.dependency_log import Outages

from .fakes import FakeNotifierStore
from .test_handlers import EXPERT, Harness


class StoreDownForTwoRounds(FakeNotifierStore):
    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    async def claim_due(self, now: dt.datetime, lease: dt.timedelta, token: str) -> SlotRecord | None:
        self.claims += 1
        if self.claims <= 2:
            raise ConnectionError("store down")
        return await super().claim_due(now, lease, token)


async def test_a_round_that_succeeds_again_ends_the_outage_and_sends_what_waited() -> None:
    store = StoreDownForTwoRounds()
    harness = Harness(store)
    await harness.ready()
    notices: list[tuple[str, dict[str, Any]]] = []
    outages = Outages(lambda level, event, fields: notices.append((event, fields)))
    stop = asyncio.Event()
    loop = asyncio.create_task(harness.handlers.send_loop(stop, poll_seconds=0.001, outages=outages))

    async def sent() -> bool:
        return bool(harness.sender.sent)

    try:
        await eventually(sent, 5, "the e-mail sent once the store is back")
    finally:
        stop.set()
        await asyncio.wait_for(loop, 5)
    assert [recipient for _, recipient in harness.sender.sent] == [EXPERT]
    assert harness.views()[-1] == ("sent", None)
    assert [(event, fields["dependency"]) for event, fields in notices] == [
        ("dependency_down", "send_round"),
        ("dependency_up", "send_round"),
    ]
    assert notices[1][1]["failures"] == 2
