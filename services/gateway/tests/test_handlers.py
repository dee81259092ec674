"""The Kafka use case (`gateway.handlers.Handlers`) with the in-memory read model and a recording hub: every branch
of projecting an event and announcing it, no server."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from gateway import handlers as gateway_handlers
from gateway.handlers import MEETING_CACHE_SIZE, Handlers
from gateway.projection import ENROLMENTS, MEETINGS, RCPS, member_key
from gateway.viewer import ViewerLinks
from proxymage_shared.errors import TransientError
from proxymage_shared.events import Event, ImagingRefresh, StudiesSelected

from .fakes import FakeReadModel, RecordingHub
from .test_projection import ENROLMENT, POOL, UIDS, _base, enrolled, identity, status, withdrawn

LINKS = ViewerLinks("http://viewer/{study_instance_uid}")
ENROLMENT_STREAM = f"enrolment:{ENROLMENT}"
MEETING_STREAM = "meeting:m-1"


@dataclass
class World:
    store: FakeReadModel = field(default_factory=FakeReadModel)
    hub: RecordingHub = field(default_factory=RecordingHub)
    changes: int = 0

    def handlers(self) -> Handlers:
        def changed() -> None:
            self.changes += 1

        return Handlers(self.store, self.hub, LINKS, on_enrolment_change=changed)

    async def handle(self, *events: Event, handlers: Handlers | None = None) -> None:
        handlers = handlers or self.handlers()
        for event in events:
            await handlers.handle(event)


def selected(offset: int, study_instance_uids: tuple[str, ...]) -> StudiesSelected:
    return StudiesSelected.model_validate(
        {
            **_base(offset),
            "enrolment_id": ENROLMENT,
            "study_instance_uids": list(study_instance_uids),
            "expertise_requested": True,
        },
        strict=False,
    )


def of_type(kind: type[Event]) -> Event:
    return next(event for event in POOL if isinstance(event, kind))


async def test_an_enrolment_is_projected_then_announced_on_both_streams() -> None:
    world = World()
    await world.handle(enrolled(1, "A"))
    assert world.store.stored(ENROLMENTS, ENROLMENT) is not None
    meeting = world.store.stored(MEETINGS, "m-1")
    assert meeting is not None
    assert meeting["members"] == {member_key(ENROLMENT): {"enrolment_id": ENROLMENT, **_stamp(meeting, "members")}}
    # The meeting's details and its member went in one write, with the enrolment's: two round trips.
    assert world.store.writes == 2
    assert [m.event for m in world.hub.on(ENROLMENT_STREAM)] == ["enrolment"]
    enrolment_message = world.hub.on(ENROLMENT_STREAM)[0].data
    assert enrolment_message["meeting_id"] == "m-1"
    assert enrolment_message["identity"] == {**_pending(), "status": "pending"}
    assert [m.event for m in world.hub.on(MEETING_STREAM)] == ["enrolment", "meeting"]
    summary = world.hub.on(MEETING_STREAM)[0].data["summary"]
    assert isinstance(summary, dict)
    assert summary["enrolment_id"] == ENROLMENT
    assert world.changes == 1


def _stamp(document: dict[str, object], part: str) -> dict[str, object]:
    members = document[part]
    assert isinstance(members, dict)
    (member,) = members.values()
    return {key: value for key, value in member.items() if key != "enrolment_id"}


def _pending() -> dict[str, object]:
    return {
        "pacs_patients": 0,
        "near_misses": [],
        "reason": None,
        "reason_code": None,
        "reason_text": None,
    }


async def test_a_replayed_event_applies_nothing_and_says_nothing_but_still_drops_the_access_cache() -> None:
    world = World()
    handlers = world.handlers()
    event = enrolled(1, "A")
    await world.handle(event, handlers=handlers)
    before = list(world.hub.messages)
    await world.handle(event, handlers=handlers)
    assert world.hub.messages == before
    assert world.changes == 2  # told even when stale: another instance may have written it first


async def test_unchanged_meeting_details_are_not_written_again_but_the_member_is_added() -> None:
    world = World()
    handlers = world.handlers()
    await world.handle(enrolled(1, "A"), handlers=handlers)
    writes = world.store.writes
    other = enrolled(2, "B").model_copy(update={"enrolment_id": "enr-2"})
    await world.handle(other, handlers=handlers)
    # The details are the same: the enrolment's write and the member's alone.
    assert world.store.writes == writes + 2
    meeting = world.store.stored(MEETINGS, "m-1")
    assert meeting is not None
    assert set(meeting["members"]) == {member_key(ENROLMENT), member_key("enr-2")}  # type: ignore[arg-type]
    assert [m.event for m in world.hub.on(MEETING_STREAM)][-1] == "enrolment"


async def test_stale_meeting_details_still_add_the_member() -> None:
    world = World()
    await world.handle(enrolled(5, "A"))
    # A fresh instance (no cache of the details) consumes an older enrolment of another patient of the meeting.
    other = enrolled(2, "B").model_copy(update={"enrolment_id": "enr-2"})
    await world.handle(other)
    meeting = world.store.stored(MEETINGS, "m-1")
    assert meeting is not None
    assert member_key("enr-2") in meeting["members"]  # type: ignore[operator]


async def test_the_details_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # A small bound stands for the real one (10,000 meetings: 2 s of projection for the same branch).
    size = 3
    assert size < MEETING_CACHE_SIZE
    monkeypatch.setattr(gateway_handlers, "MEETING_CACHE_SIZE", size)
    world = World()
    handlers = world.handlers()
    for index in range(size + 1):
        event = enrolled(1, "A").model_copy(update={"meeting_id": f"m-{index}", "enrolment_id": f"e-{index}"})
        await handlers.handle(event)
    assert len(handlers._meeting_details) == 1  # cleared when full, then the newest kept


async def test_an_identity_outcome_announces_the_identity() -> None:
    world = World()
    first = enrolled(1, "A")
    await world.handle(first, identity(2, first, "matched"))
    message = world.hub.on(ENROLMENT_STREAM)[-1]
    assert message.event == "identity"
    assert message.data["identity"] == {**_pending(), "status": "matched", "pacs_patients": 1}


async def test_a_withdrawal_announces_the_withdrawal_and_the_identity() -> None:
    world = World()
    await world.handle(enrolled(1, "A"), withdrawn(2, "raison"))
    message = world.hub.on(ENROLMENT_STREAM)[-1]
    assert message.event == "withdrawal"
    withdrawal = message.data["withdrawal"]
    assert isinstance(withdrawal, dict)
    assert withdrawal["reason"] == "raison"
    identity_data = message.data["identity"]
    assert isinstance(identity_data, dict)
    assert identity_data["status"] == "withdrawn"


async def test_study_states_projected_before_their_selection_are_announced_again_selected() -> None:
    world = World()
    first = enrolled(1, "A")
    await world.handle(first, status(3, UIDS[0], 1, "queued"))
    early = world.hub.on(ENROLMENT_STREAM)[-1]
    assert (early.event, early.data["study_instance_uid"], early.data["selected"]) == ("study-status", UIDS[0], False)
    await world.handle(selected(4, (UIDS[0], UIDS[1])))
    selection, again = world.hub.on(ENROLMENT_STREAM)[-2:]
    assert selection.event == "selection"
    assert selection.data["selected"] == [UIDS[0], UIDS[1]]
    assert selection.data["expertise_requested"] is True
    # Only the study with a state is said again (UIDS[1] has none yet).
    assert (again.event, again.data["study_instance_uid"], again.data["selected"]) == ("study-status", UIDS[0], True)


async def test_a_removal_announces_the_study_state() -> None:
    world = World()
    await world.handle(enrolled(1, "A"), selected(2, (UIDS[0],)))
    removal = next(event for event in POOL if type(event).__name__ == "StudyRemoved")
    await world.handle(removal.model_copy(update={"study_instance_uid": UIDS[0]}))
    message = world.hub.on(ENROLMENT_STREAM)[-1]
    assert (message.event, message.data["study_instance_uid"]) == ("removal", UIDS[0])


@pytest.mark.parametrize(
    ("kind", "stream", "event_name", "key"),
    [
        ("MeetingExperts", MEETING_STREAM, "meeting", "meeting"),
        ("RcpSettings", "rcp:rcp-1", "rcp-settings", "rcp"),
        ("ExpertiseNotification", ENROLMENT_STREAM, "expertise", "expertise"),
        ("ImagingCatalogued", ENROLMENT_STREAM, "catalogue", "catalogue"),
    ],
)
async def test_each_kind_of_part_is_announced_on_its_stream(kind: str, stream: str, event_name: str, key: str) -> None:
    world = World()
    event = next(event for event in POOL if type(event).__name__ == kind)
    await world.handle(event)
    (message,) = world.hub.on(stream)
    assert message.event == event_name
    assert isinstance(message.data[key], dict)


async def test_rcp_settings_are_read_back() -> None:
    world = World()
    await world.handle(next(event for event in POOL if type(event).__name__ == "RcpSettings"))
    record = await world.store.rcp("rcp-1")
    assert record is not None
    assert world.store.stored(RCPS, "rcp-1") is not None
    assert world.changes == 0  # not an enrolment


async def test_an_event_the_gateway_does_not_project_does_nothing() -> None:
    world = World()
    await world.handle(ImagingRefresh.model_validate({**_base(1), "enrolment_id": ENROLMENT}, strict=False))
    assert world.store.writes == 0
    assert world.hub.messages == []


async def test_a_store_failure_reaches_the_consumer_which_retries() -> None:
    world = World()
    world.store.fail = TransientError("read model down")
    with pytest.raises(TransientError):
        await world.handle(enrolled(1, "A"))
    assert world.hub.messages == []
