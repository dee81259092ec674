"""In-memory adapters for the gateway's use cases (`gateway.ports`), with the semantics of the MongoDB read model:
a patch applies only when it is newer than the stored part (`projection.apply_patch`, the store's exact
counterpart), a meeting's member is written with its details or on its own, and reads return the typed documents
(`gateway.read_model`), parsed from the stored form as the store parses them."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from gateway import read_model
from gateway.api import ApiContext, Publish, create_api
from gateway.audit import Auditor, AuditRecord
from gateway.auth import TokenVerifier, token_hash
from gateway.hub import Hub
from gateway.ports import ReadModelReader
from gateway.projection import ENROLMENTS, MEETINGS, RCPS, Collection, Json, Patch, apply_patch, supersedes
from gateway.read_model import EnrolmentRecord, MeetingRecord, RcpRecord, Record
from gateway.settings import ApiToken
from gateway.viewer import ViewerLinks
from proxymage_shared.events import Event

# A document as the projection writes it (JSON values only).
StoredDocument = dict[str, Json]


def _set(document: StoredDocument | None, patch: Patch) -> StoredDocument:
    """The document with `patch`'s value set at its path whatever is there (MongoDB's `$set`)."""
    result: StoredDocument = dict(document) if document is not None else {"_id": patch.key}
    parent, leaf = patch.path.split(".")
    node = result.get(parent)
    result[parent] = {**(node if isinstance(node, dict) else {}), leaf: patch.stored_value()}
    return result


class FakeReadModel:
    def __init__(self) -> None:
        self.documents: dict[tuple[Collection, str], StoredDocument] = {}
        self.audit: list[AuditRecord] = []
        self.writes = 0  # round trips of the projection's writes
        self.fail: Exception | None = None  # raised by the next write

    def stored(self, collection: Collection, key: str) -> StoredDocument | None:
        return self.documents.get((collection, key))

    def _write(self) -> None:
        self.writes += 1
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error

    async def apply(self, patch: Patch, member: Patch | None = None) -> Record | None:
        self._write()
        key = (patch.collection, patch.key)
        before = self.documents.get(key)
        if not supersedes(patch, before):
            return None
        after = apply_patch(before, patch)
        if member is not None:
            after = _set(after, member)
        self.documents[key] = after
        return read_model.parse_document(patch.collection, after)

    async def add_member(self, patch: Patch) -> None:
        self._write()
        self.documents[(MEETINGS, patch.key)] = _set(self.documents.get((MEETINGS, patch.key)), patch)

    def _all(self, collection: Collection) -> list[StoredDocument]:
        return [document for (name, _), document in sorted(self.documents.items()) if name == collection]

    async def enrolment(self, enrolment_id: str) -> EnrolmentRecord | None:
        document = self.documents.get((ENROLMENTS, enrolment_id))
        return read_model.enrolment_record(document) if document is not None else None

    async def enrolments_selecting(
        self, study_instance_uids: Sequence[str], limit: int = 1000
    ) -> list[EnrolmentRecord]:
        records = [read_model.enrolment_record(document) for document in self._all(ENROLMENTS)]
        wanted = set(study_instance_uids)
        return [
            record
            for record in records
            if record.selection is not None and wanted & set(record.selection.study_instance_uids)
        ][:limit]

    async def meeting(self, meeting_id: str) -> MeetingRecord | None:
        document = self.documents.get((MEETINGS, meeting_id))
        return read_model.meeting_record(document) if document is not None else None

    async def enrolments_of(self, meeting_id: str, meeting: MeetingRecord | None, limit: int) -> list[EnrolmentRecord]:
        records = [read_model.enrolment_record(document) for document in self._all(ENROLMENTS)]
        if meeting is not None and meeting.members is not None:
            listed = {member.enrolment_id for member in meeting.members.values()}
            records = [record for record in records if record.enrolment_id in listed]
        return [r for r in records if r.enrolment is not None and r.enrolment.meeting_id == meeting_id][:limit]

    async def meetings(self, limit: int) -> list[MeetingRecord]:
        return [read_model.meeting_record(document) for document in self._all(MEETINGS)][:limit]

    async def meetings_dated(self, first_day: dt.date, last_day: dt.date, limit: int) -> list[MeetingRecord]:
        records = [read_model.meeting_record(document) for document in self._all(MEETINGS)]
        first, last = first_day.isoformat(), last_day.isoformat()

        def dated(record: MeetingRecord) -> bool:
            dates = [part.date for part in (record.experts, record.enrolment_details) if part is not None]
            return any(date is not None and first <= date <= last for date in dates)

        return [record for record in records if dated(record)][:limit]

    async def rcp(self, rcp_id: str) -> RcpRecord | None:
        document = self.documents.get((RCPS, rcp_id))
        return read_model.rcp_record(document) if document is not None else None

    async def rcps(self, limit: int) -> list[RcpRecord]:
        return [read_model.rcp_record(document) for document in self._all(RCPS)][:limit]

    async def record_audit(self, records: list[AuditRecord]) -> None:
        self.audit += records

    async def audit_of(self, enrolment_id: str, limit: int) -> list[AuditRecord]:
        named = [record for record in self.audit if record.get("enrolment_id") == enrolment_id]
        return sorted(named, key=lambda record: str(record["at"]), reverse=True)[:limit]


@dataclass(frozen=True, slots=True)
class Announced:
    stream: str
    event: str
    data: Mapping[str, Json]


@dataclass
class RecordingHub:
    """The SSE hub, recording what is published."""

    messages: list[Announced] = field(default_factory=list)

    def publish(self, stream_name: str, event: str, data: Mapping[str, Json]) -> None:
        self.messages.append(Announced(stream_name, event, data))

    def on(self, stream: str) -> list[Announced]:
        return [message for message in self.messages if message.stream == stream]


class CommandRecorder:
    """The API's publisher, audit and meetings replaced: what a command publishes and audits, without servers."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, Event]] = []
        self.audited: list[dict[str, Any]] = []
        self.stored_meetings: list[MeetingRecord] = []
        self.fail = False  # publishing raises, as with Kafka down

    async def publish(self, topic: str, key: str, event: Event) -> None:
        if self.fail:
            raise ConnectionError("kafka down")
        self.published.append((topic, key, event))

    async def write(self, records: list[dict[str, Any]]) -> None:
        self.audited.extend(records)

    async def meetings(self, limit: int) -> list[MeetingRecord]:
        return self.stored_meetings[:limit]


def api_context(
    store: ReadModelReader,
    auditor: Auditor,
    publish: Publish,
    now: dt.datetime,
    tokens: Mapping[str, tuple[str, str]],
    **context: Any,
) -> ApiContext:
    """The API's context over `store`, at the fixed time `now`; `tokens` maps each bearer to its (name, role);
    `context` sets the other fields (hub, heartbeat_seconds...)."""
    context.setdefault("hub", Hub())
    context.setdefault("links", ViewerLinks(""))
    context.setdefault("today", lambda: now.date())
    return ApiContext(
        store=store,
        verifier=TokenVerifier(
            [ApiToken(name=name, role=role, sha256=token_hash(token)) for token, (name, role) in tokens.items()]
        ),
        auditor=auditor,
        publish=publish,
        now=lambda: now,
        **context,
    )


@contextlib.asynccontextmanager
async def api_client(api: ApiContext, bearer: str = "dcc-token") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the API of `api` (in-process, no server), signed in with `bearer`."""
    transport = httpx.ASGITransport(app=create_api(api))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway.test", headers={"Authorization": f"Bearer {bearer}"}
    ) as http:
        yield http


class RecordingAuditor(Auditor):
    """Keeps what the routes audit in `records` (the real `Auditor` queues it for MongoDB; nothing is written)."""

    def __init__(self) -> None:
        super().__init__(self._never)
        self.records: list[dict[str, Any]] = []

    @staticmethod
    async def _never(records: list[dict[str, Any]]) -> None:
        raise AssertionError("a recording auditor writes nothing")

    def record(self, **entry: Any) -> None:
        self.records.append(entry)


READER_TOKEN = "jeton-essai-lecture"


@contextlib.asynccontextmanager
async def reading_client(
    store: FakeReadModel, *, today: dt.date, now: dt.datetime
) -> AsyncIterator[tuple[httpx.AsyncClient, list[dict[str, Any]]]]:
    """An HTTP client of the API over `store`, signed in with a `viewer` token, and what the routes audit."""
    auditor = RecordingAuditor()
    publish: Any = None  # reads only
    api = api_context(store, auditor, publish, now, {READER_TOKEN: ("lecture-essai", "viewer")}, today=lambda: today)
    async with api_client(api, READER_TOKEN) as http:
        yield http, auditor.records


@contextlib.asynccontextmanager
async def command_client(
    recorder: CommandRecorder, now: dt.datetime, tokens: Mapping[str, tuple[str, str]], **context: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the API built on `recorder`, signed in with the `dcc-token` bearer; `tokens` maps each
    bearer to its (name, role)."""
    auditor = Auditor(recorder.write)
    store: Any = recorder  # commands read only the meetings
    async with api_client(api_context(store, auditor, recorder.publish, now, tokens, **context)) as http:
        yield http
    await auditor.flush()


def enrolment_body(*, patient: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A valid `POST /api/v1/enrolments` body of an obviously fictitious patient; `fields` and `patient` override."""
    return {
        "enrolment_id": "enr-fictif-1",
        "meeting_id": "m-fictif-1",
        "rcp_id": "rcp-fictif",
        "meeting_title": "RCP fictive",
        "meeting_date": "2026-12-10",
        "centre": "CHU Fictif",
        "consent": True,
        "requested_by": {"name": "Dr Essai"},
        **fields,
        "patient": {
            "birth_name": "FICTIF",
            "used_name": None,
            "first_name": "Alice",
            "birth_date": "1960-01-01",
            "sex": "F",
            **(patient or {}),
        },
    }
