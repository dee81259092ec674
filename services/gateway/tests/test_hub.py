"""The SSE hub: order, Last-Event-ID resume, resync on gaps."""

from __future__ import annotations

from gateway.hub import Hub


async def test_order_and_resume() -> None:
    hub = Hub(buffer_size=3, boot=7)
    with hub.subscribe("s") as live:
        sent = [hub.publish("s", "e", {"n": n}) for n in range(5)]
        hub.publish("other", "e", {})
        received = [live.listener.queue.get_nowait() for _ in range(5)]
        assert received == sent
        assert live.listener.queue.empty()
    ids = [message.id for message in sent]
    assert ids == sorted(ids, key=lambda text: int(text.split("-")[1]))
    assert ids[0].startswith("7-")
    with hub.subscribe("s", ids[2]) as resumed:  # the two after it are still buffered
        assert resumed.backlog == sent[3:]
        assert not resumed.resync
    with hub.subscribe("s", ids[4]) as resumed:
        assert resumed.backlog == []
        assert not resumed.resync
    with hub.subscribe("s", ids[0]) as resumed:  # sent[1] fell out of the buffer: reload
        assert resumed.resync
        assert resumed.backlog == []
    for foreign in ("6-3", "7-999", "garbage", ""):
        with hub.subscribe("s", foreign) as resumed:
            assert resumed.resync


async def test_slow_listener_is_marked_and_close_ends_streams() -> None:
    hub = Hub(buffer_size=2, boot=1, queue_size=2)
    with hub.subscribe("s") as live:
        for n in range(3):
            hub.publish("s", "e", {"n": n})
        assert live.listener.overflowed
        hub.close()
        items = []
        while not live.listener.queue.empty():
            items.append(live.listener.queue.get_nowait())
        assert items[-1] is None


async def test_evicts_idle_streams_only() -> None:
    hub = Hub(buffer_size=2, max_streams=2, boot=1)
    with hub.subscribe("kept"):
        first = hub.publish("a", "e", {})
        hub.publish("b", "e", {})
        hub.publish("c", "e", {})
        assert hub.listeners("kept") == 1
        hub.publish("a", "e", {})
    with hub.subscribe("a", first.id) as resumed:  # "a" was evicted and made anew: reload
        assert resumed.resync
