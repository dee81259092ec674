"""The SSE streams of the REST API (CONTRACT.md "Gateway REST"): an enrolment's and a meeting's live updates, fed
by the hub (`gateway.hub`), resumable with `Last-Event-ID`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from gateway.api_common import ERRORS, ApiContext, EnrolmentId, MeetingId, Reader
from gateway.hub import RESYNC, Hub, Message
from gateway.live import enrolment_stream, meeting_stream

Endpoint = TypeVar("Endpoint", bound=Callable[..., object])
SSE_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    **ERRORS,
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "Server-sent events."},
}


def _stream(router: APIRouter, path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
    """An SSE route's decorator (tag `live`)."""
    return router.get(path, response_class=StreamingResponse, responses=SSE_RESPONSES, summary=summary, tags=["live"])


def add_live_routes(router: APIRouter, context: ApiContext) -> None:
    # The endpoints have no docstring: FastAPI would publish it as the operation's description.
    @_stream(
        router,
        "/enrolments/{enrolment_id}/events",
        "Server-sent events: the enrolment's state changes (resume with Last-Event-ID)",
    )
    async def enrolment_events(who: Reader, request: Request, enrolment_id: EnrolmentId) -> StreamingResponse:
        return _sse(context, request, enrolment_stream(enrolment_id))

    @_stream(
        router,
        "/meetings/{meeting_id}/events",
        "Server-sent events: the state changes of the meeting and of its enrolments",
    )
    async def meeting_events(who: Reader, request: Request, meeting_id: MeetingId) -> StreamingResponse:
        return _sse(context, request, meeting_stream(meeting_id))


def _sse(context: ApiContext, request: Request, stream: str) -> StreamingResponse:
    last_event_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return StreamingResponse(
        _event_stream(context.hub, stream, last_event_id, context.heartbeat_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resync(stream: str) -> bytes:
    # No id: the client keeps its Last-Event-ID until a real message arrives.
    return f"event: {RESYNC}\ndata: {json.dumps({'stream': stream, 'reload': True})}\n\n".encode()


async def _event_stream(hub: Hub, stream: str, last_event_id: str | None, heartbeat: float) -> AsyncIterator[bytes]:
    with hub.subscribe(stream, last_event_id) as subscription:
        yield b"retry: 3000\n: connected\n\n"
        if subscription.resync:
            yield _resync(stream)
        for message in subscription.backlog:
            yield message.encode()
        listener = subscription.listener
        while True:
            if listener.overflowed:
                while not listener.queue.empty():
                    listener.queue.get_nowait()
                listener.overflowed = False
                yield _resync(stream)
            item: Message | None
            try:
                # Waited for in this task (`asyncio.wait_for` would start a task per message: one more turn of
                # the event loop between the projection's write and the client).
                async with asyncio.timeout(heartbeat):
                    item = await listener.queue.get()
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if item is None:
                return
            yield item.encode()
