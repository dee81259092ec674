"""Malformed events, as a broken or hostile producer would write them: every kind fails the validation of every
event model (no required field is ever right). Pure."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Final

KINDS: Final[tuple[tuple[str, bytes], ...]] = (
    ("empty", b""),
    ("not_json", b"this is not json"),
    ("truncated_json", b'{"event_id": "6f1c'),
    ("invalid_utf8", b"\xff\xfe\xfa{}"),
    ("json_null", b"null"),
    ("json_array", b"[1, 2, 3]"),
    ("json_number", b"42"),
    ("empty_object", b"{}"),
    ("missing_fields", json.dumps({"event_id": "00000000-0000-4000-8000-000000000000"}).encode()),
    (
        "wrong_types",
        json.dumps({"event_id": 12, "occurred_at": "yesterday", "enrolment_id": ["a"], "meeting_id": {}}).encode(),
    ),
    ("oversized", json.dumps({"event_id": "x" * 200_000}).encode()),
    ("nested_deep", (b"[" * 5000) + (b"]" * 5000)),
)


def malformed_events(count: int, topics: Sequence[str]) -> Iterator[tuple[str, bytes, str, bytes]]:
    """`count` events (topic, key, kind, value), round-robin over the topics and, within a topic, over the kinds, so
    that every topic gets every kind once `count` is at least len(topics) x len(KINDS)."""
    if not topics:
        return
    for index in range(count):
        topic = topics[index % len(topics)]
        kind, value = KINDS[(index // len(topics)) % len(KINDS)]
        yield topic, f"malformed-{index}".encode(), kind, value
