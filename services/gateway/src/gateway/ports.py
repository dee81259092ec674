"""What the gateway's use cases need of the world, as protocols: the read model the Kafka `Handlers` write and the
REST API reads (`store.ReadModelStore`; an in-memory fake in the tests), and the SSE hub the handlers announce on
(`hub.Hub`). The values are the typed documents of `gateway.read_model`.

A StudyInstanceUID is `study_instance_uid` in every name here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Protocol

from gateway.audit import AuditRecord
from gateway.projection import Json, Patch
from gateway.read_model import EnrolmentRecord, MeetingRecord, RcpRecord, Record


class ReadModelWriter(Protocol):
    """The projection's writes (`Handlers`): each patch applied only if it is newer than what is stored."""

    async def apply(self, patch: Patch, member: Patch | None = None) -> Record | None:
        """The document after writing `patch` (and `member` with it), or None when the patch was stale."""
        ...

    async def add_member(self, patch: Patch) -> None: ...


class ReadModelReader(Protocol):
    """The REST API's and the viewer's reads."""

    async def enrolment(self, enrolment_id: str) -> EnrolmentRecord | None: ...
    async def enrolments_selecting(
        self, study_instance_uids: Sequence[str], limit: int = 1000
    ) -> list[EnrolmentRecord]: ...
    async def meeting(self, meeting_id: str) -> MeetingRecord | None: ...
    async def enrolments_of(
        self, meeting_id: str, meeting: MeetingRecord | None, limit: int
    ) -> list[EnrolmentRecord]: ...
    async def meetings(self, limit: int) -> list[MeetingRecord]: ...
    async def meetings_dated(self, first_day: dt.date, last_day: dt.date, limit: int) -> list[MeetingRecord]: ...
    async def rcp(self, rcp_id: str) -> RcpRecord | None: ...
    async def rcps(self, limit: int) -> list[RcpRecord]: ...
    async def audit_of(self, enrolment_id: str, limit: int) -> list[AuditRecord]:
        """The enrolment's audit entries, newest first."""
        ...


class ReadModel(ReadModelWriter, ReadModelReader, Protocol):
    """The whole read model, with the audit trail beside it."""

    async def record_audit(self, records: list[AuditRecord]) -> None: ...


class Announcer(Protocol):
    """Where live updates go (`hub.Hub`)."""

    def publish(self, stream_name: str, event: str, data: Mapping[str, Json]) -> object: ...
