"""The audit trail: who (a token's name, or a signed-in person's name and subject; the role), what (route or
command), when, which enrolment/meeting/RCP.

No patient data: ids only. Records are queued by the request and written in batches by a background
loop, so an audit write never adds a FerretDB round trip to a request; the queue is drained at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

from prometheus_client import Counter
from proxymage_shared.logging import get_logger

log = get_logger(__name__)

AUDIT_DROPPED: Final = Counter("proxymage_gateway_audit_failures_total", "Audit records that could not be written.")

# One entry of the trail, as stored: ids, names and the time, no patient data.
AuditRecord: TypeAlias = dict[str, dt.datetime | str | int | None]
Writer = Callable[[list[AuditRecord]], Awaitable[None]]


class Auditor:
    def __init__(self, write: Writer, batch_size: int = 200, max_pending: int = 100_000) -> None:
        self._write = write
        self._batch_size = batch_size
        self._queue: asyncio.Queue[AuditRecord] = asyncio.Queue(maxsize=max_pending)

    def record(
        self,
        *,
        who: str,
        role: str,
        action: str,
        status: int,
        enrolment_id: str | None = None,
        meeting_id: str | None = None,
        rcp_id: str | None = None,
        event_id: str | None = None,
        subject: str | None = None,
    ) -> None:
        entry: AuditRecord = {
            "at": dt.datetime.now(dt.UTC),
            "who": who,
            "subject": subject,  # the identity provider's id of a signed-in person (None for a token)
            "role": role,
            "action": action,
            "status": status,
            "enrolment_id": enrolment_id,
            "meeting_id": meeting_id,
            "rcp_id": rcp_id,
            "event_id": event_id,
        }
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            AUDIT_DROPPED.inc()
            log.error("audit_queue_full", action=action)

    def _take_batch(self) -> list[AuditRecord]:
        batch: list[AuditRecord] = []
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def flush(self) -> None:
        while batch := self._take_batch():
            await self._write(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Writes queued records until `stop`, then whatever is left (also when cancelled)."""
        try:
            while not stop.is_set():
                first = await self._queue.get()
                batch = [first, *self._take_batch()]
                try:
                    await self._write(batch)
                except Exception as error:
                    AUDIT_DROPPED.inc(len(batch))
                    log.error("audit_write_failed", error=type(error).__name__, records=len(batch))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(self.flush(), 5))

    def pending(self) -> int:
        return self._queue.qsize()
