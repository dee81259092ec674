"""The SSE routes (`gateway.api_live`) through the ASGI app, read as they stream (no server): the backlog after
`Last-Event-ID`, the `resync` of an id the hub cannot resume from and of a listener that fell behind, the
keep-alive of a quiet stream, the end of the stream when the hub closes and when the client goes away.

httpx's ASGI transport hands over a response only once it is complete, so `Stream` plays the server's part
itself: it calls the app and hands each chunk over as it is sent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator

import pytest
from gateway.api import create_api
from gateway.audit import Auditor
from gateway.hub import Hub
from proxymage_shared.events import Event
from starlette.types import Message, Scope

from .fakes import FakeReadModel, api_context

NOW = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.UTC)
CONNECTED = b"retry: 3000\n: connected\n\n"
KEEPALIVE = b": keepalive\n\n"
WAIT_SECONDS = 5.0  # at most, for a chunk that is due at once


async def _no_publish(topic: str, key: str, event: Event) -> None:
    raise AssertionError(f"a stream published {topic}")


class Stream:
    """One GET of the app, its response body chunk by chunk as the app sends it."""

    def __init__(self, hub: Hub, path: str, headers: dict[str, str], heartbeat: float) -> None:
        store = FakeReadModel()
        context = api_context(
            store, Auditor(store.record_audit), _no_publish, NOW, {"viewer-token": ("lecteur", "viewer")}, hub=hub
        )
        context.heartbeat_seconds = heartbeat
        self._app = create_api(context)
        path, _, query = path.partition("?")
        sent = {"authorization": "Bearer viewer-token", **headers}
        self._scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(name.encode(), value.encode()) for name, value in sent.items()],
            "server": ("gateway.test", 80),
            "client": ("127.0.0.1", 40000),
        }
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: the body ended
        self._requested = False
        self._gone = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> Message:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {name.decode(): value.decode() for name, value in message["headers"]}
        elif message["type"] == "http.response.body":
            if message.get("body"):
                await self._chunks.put(message["body"])
            if not message.get("more_body", False):
                await self._chunks.put(None)

    def start(self) -> None:
        self.task = asyncio.create_task(self._app(self._scope, self._receive, self._send))

    async def next(self) -> bytes | None:
        """The next chunk (one SSE message), None once the body ended."""
        return await asyncio.wait_for(self._chunks.get(), WAIT_SECONDS)

    async def ended(self) -> None:
        """Waits for the app to finish answering."""
        assert self.task is not None
        await asyncio.wait_for(self.task, WAIT_SECONDS)

    def disconnect(self) -> None:
        self._gone.set()


@contextlib.asynccontextmanager
async def streaming(
    hub: Hub, path: str, headers: dict[str, str] | None = None, heartbeat: float = 60.0
) -> AsyncIterator[Stream]:
    stream = Stream(hub, path, headers or {}, heartbeat)
    stream.start()
    try:
        assert await stream.next() == CONNECTED
        yield stream
    finally:
        stream.disconnect()
        with contextlib.suppress(Exception):
            await stream.ended()


def _resync(stream_name: str) -> bytes:
    return f"event: resync\ndata: {json.dumps({'stream': stream_name, 'reload': True})}\n\n".encode()


async def test_an_enrolment_stream_sends_the_backlog_after_last_event_id_then_live_messages() -> None:
    hub = Hub(boot=7)
    first, second, third = (hub.publish("enrolment:enr-1", "study", {"n": n}) for n in (1, 2, 3))
    hub.publish("enrolment:enr-2", "study", {"n": 9})  # another enrolment's: not in this stream
    async with streaming(hub, "/api/v1/enrolments/enr-1/events", {"last-event-id": first.id}) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        assert await stream.next() == second.encode() == b'id: 7-2\nevent: study\ndata: {"n":2}\n\n'
        assert await stream.next() == third.encode()
        live = hub.publish("enrolment:enr-1", "identity", {"status": "matched"})
        assert await stream.next() == live.encode()


async def test_a_meeting_stream_resumes_from_the_last_event_id_query_parameter() -> None:
    hub = Hub(boot=7)
    first, second = (hub.publish("meeting:m-1", "enrolment", {"n": n}) for n in (1, 2))
    async with streaming(hub, f"/api/v1/meetings/m-1/events?last_event_id={first.id}") as stream:
        assert await stream.next() == second.encode()


@pytest.mark.parametrize("last_event_id", ["3-1", "7-99", "pas-un-id"])
async def test_an_id_the_hub_cannot_resume_from_is_answered_with_resync(last_event_id: str) -> None:
    # another process life, an id from the future, garbage: reload over REST, then the live messages
    hub = Hub(boot=7)
    hub.publish("meeting:m-1", "enrolment", {"n": 1})
    async with streaming(hub, "/api/v1/meetings/m-1/events", {"last-event-id": last_event_id}) as stream:
        assert await stream.next() == _resync("meeting:m-1")
        live = hub.publish("meeting:m-1", "meeting", {"n": 2})
        assert await stream.next() == live.encode()


async def test_a_listener_that_fell_behind_is_told_to_resync_and_its_stale_queue_dropped() -> None:
    hub = Hub(boot=7, queue_size=2)
    async with streaming(hub, "/api/v1/enrolments/enr-1/events") as stream:
        # Published back to back, before the stream runs again: the first two fill the listener's queue, the
        # third overflows it.
        first = hub.publish("enrolment:enr-1", "study", {"n": 0})
        hub.publish("enrolment:enr-1", "study", {"n": 1})
        hub.publish("enrolment:enr-1", "study", {"n": 2})
        assert await stream.next() == first.encode()  # already handed to the stream
        assert await stream.next() == _resync("enrolment:enr-1")  # n=1 dropped from the queue, n=2 never queued
        live = hub.publish("enrolment:enr-1", "study", {"n": 3})
        assert await stream.next() == live.encode()


async def test_a_quiet_stream_sends_keepalives() -> None:
    hub = Hub(boot=7)
    async with streaming(hub, "/api/v1/enrolments/enr-1/events", heartbeat=0.01) as stream:
        assert await stream.next() == KEEPALIVE
        assert await stream.next() == KEEPALIVE
        live = hub.publish("enrolment:enr-1", "study", {"n": 1})
        # Keepalives go on meanwhile (one may already be on its way); the message comes among them.
        received = await stream.next()
        while received == KEEPALIVE:
            received = await stream.next()
        assert received == live.encode()


async def test_closing_the_hub_ends_every_open_stream() -> None:
    hub = Hub(boot=7)
    async with (
        streaming(hub, "/api/v1/enrolments/enr-1/events") as enrolment,
        streaming(hub, "/api/v1/meetings/m-1/events") as meeting,
    ):
        hub.close()  # the gateway stops
        for stream in (enrolment, meeting):
            assert await stream.next() is None
            await stream.ended()
    async with streaming(hub, "/api/v1/meetings/m-1/events") as late:  # opened after the close: ends at once
        assert await late.next() is None


async def test_a_client_going_away_ends_its_stream_and_unsubscribes() -> None:
    hub = Hub(boot=7)
    async with streaming(hub, "/api/v1/enrolments/enr-1/events") as stream:
        assert hub.listeners("enrolment:enr-1") == 1
        stream.disconnect()
        await stream.ended()
        assert hub.listeners("enrolment:enr-1") == 0
