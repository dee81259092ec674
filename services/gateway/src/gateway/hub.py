"""In-process publish/subscribe for the SSE streams, fed by the consumed events (no MongoDB polling).

Streams are named (`enrolment:<id>`, `meeting:<id>`). Every published message gets an id
`<boot>-<seq>`: `boot` identifies this process's life, `seq` comes from one counter for the whole hub,
so ids only grow within a stream, and an id from before a restart is recognised as such.

`Last-Event-ID` resume: each stream keeps its last `buffer_size` messages. A client coming back with an id
of this process whose successors are all still buffered gets them, in order; otherwise (older than the
buffer, another process life, a stream evicted meanwhile, or a listener too slow to keep up) it gets one
`resync` event telling it to reload the state over REST, then the live messages.

Publishing is synchronous (no await between numbering and queueing), so every listener sees a stream's
messages in the order they were published.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from gateway.projection import Json

RESYNC: Final = "resync"


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    seq: int
    event: str
    data: str  # JSON

    def encode(self) -> bytes:
        return f"id: {self.id}\nevent: {self.event}\ndata: {self.data}\n\n".encode()


@dataclass(eq=False, slots=True)
class Listener:
    queue: asyncio.Queue[Message | None]
    overflowed: bool = False


@dataclass(slots=True)
class _Stream:
    horizon: int  # messages with a seq <= horizon may be missing from the buffer
    buffer: deque[Message]
    listeners: set[Listener] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Subscription:
    listener: Listener
    backlog: list[Message]  # to send first (resumed messages), in order
    resync: bool  # tell the client to reload before the live messages


class Hub:
    def __init__(
        self, buffer_size: int = 256, max_streams: int = 10_000, boot: int | None = None, queue_size: int = 1024
    ) -> None:
        self._buffer_size = buffer_size
        self._queue_size = queue_size
        self._max_streams = max_streams
        self.boot = boot if boot is not None else time.time_ns() // 1_000_000
        self._seq = 0
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._closed = False

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = _Stream(horizon=self._seq, buffer=deque(maxlen=self._buffer_size))
            self._streams[name] = stream
            self._evict()
        else:
            self._streams.move_to_end(name)
        return stream

    def _evict(self) -> None:
        while len(self._streams) > self._max_streams:
            victim = next((name for name, stream in self._streams.items() if not stream.listeners), None)
            if victim is None:
                return
            del self._streams[victim]

    def publish(self, stream_name: str, event: str, data: Mapping[str, Json]) -> Message:
        stream = self._stream(stream_name)
        self._seq += 1
        message = Message(f"{self.boot}-{self._seq}", self._seq, event, json.dumps(data, separators=(",", ":")))
        if len(stream.buffer) == stream.buffer.maxlen:
            stream.horizon = stream.buffer[0].seq
        stream.buffer.append(message)
        for listener in stream.listeners:
            if listener.overflowed:
                continue
            try:
                listener.queue.put_nowait(message)
            except asyncio.QueueFull:
                listener.overflowed = True
        return message

    def _resume(self, stream: _Stream, last_event_id: str | None) -> tuple[list[Message], bool]:
        if last_event_id is None:
            return [], False
        boot, _, seq_text = last_event_id.strip().partition("-")
        if boot != str(self.boot) or not seq_text.isdigit():
            return [], True
        seq = int(seq_text)
        if seq > self._seq or seq < stream.horizon:
            return [], True
        return [message for message in stream.buffer if message.seq > seq], False

    @contextmanager
    def subscribe(self, stream_name: str, last_event_id: str | None = None) -> Iterator[Subscription]:
        stream = self._stream(stream_name)
        listener = Listener(asyncio.Queue(maxsize=self._queue_size))
        if self._closed:
            listener.queue.put_nowait(None)
        backlog, resync = self._resume(stream, last_event_id)
        stream.listeners.add(listener)
        try:
            yield Subscription(listener, backlog, resync)
        finally:
            stream.listeners.discard(listener)

    def close(self) -> None:
        """Ends every stream (at shutdown: open SSE responses must finish for the server to stop)."""
        self._closed = True
        for stream in self._streams.values():
            for listener in stream.listeners:
                while True:
                    try:
                        listener.queue.put_nowait(None)
                        break
                    except asyncio.QueueFull:
                        listener.queue.get_nowait()

    def listeners(self, stream_name: str) -> int:
        stream = self._streams.get(stream_name)
        return len(stream.listeners) if stream else 0
