"""The sender's guard (`handlers.Handlers._send_claimed`): an e-mail decided as due whose text cannot be written,
because a fact it is written from (the meeting) is missing, is a permanent failure, recorded and published,
and nothing is sent. With in-memory fakes, no server.

`desired` only wants an e-mail once the enrolment and its meeting are known, so the handlers never decide to
send without them; the guard is reached here through a decision taken on a meeting the store no longer has."""

from __future__ import annotations

import datetime as dt

from expert_notifier.domain import EnrolmentFacts, MeetingFacts
from expert_notifier.handlers import Handlers, _Decision
from proxymage_shared.events import ExpertRole

from .test_handlers import Harness

MISSING = "les informations de l'inscription ne sont plus disponibles"


class DecidingOnAForgottenMeeting(Handlers):
    """Decides as if the meeting last seen were still known (the facts the e-mail is written from are not)."""

    forgotten: MeetingFacts | None = None

    def _decide(
        self, role: ExpertRole, facts: EnrolmentFacts, meeting: MeetingFacts | None, now: dt.datetime
    ) -> _Decision:
        return super()._decide(role, facts, meeting or self.forgotten, now)


async def test_an_email_whose_facts_are_missing_fails_permanently_and_nothing_is_sent() -> None:
    harness = Harness(handlers=DecidingOnAForgottenMeeting)
    await harness.ready()
    assert harness.views()[-1] == ("pending", None)
    handlers = harness.handlers
    assert isinstance(handlers, DecidingOnAForgottenMeeting)
    handlers.forgotten = harness.store.meetings.pop("m-1")[1]  # the e-mail's meeting can no longer be read
    assert await handlers.send_due() == 1
    assert harness.sender.sent == []
    (notification,) = harness.slot().slot.notifications
    assert (notification.status, notification.attempts, notification.next_attempt_at) == ("failed", 1, None)
    published = harness.published[-1]
    assert (published.role, published.status, published.reason_code) == ("radiologist", "failed", "send_failed")
    assert MISSING in (published.reason or "")
    assert harness.slot().lease_token is None
    assert await handlers.send_due() == 0  # final: never tried again
