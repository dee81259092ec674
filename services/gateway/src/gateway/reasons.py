"""How the gateway tells a reason the services published: the REST `reason`, `reason_code`, `reason_text`.

CONTRACT v1.1: the REST `reason` is "a stable code plus a French text" (`"<code>: <texte>"`,
`proxymage_shared.reasons.Reason.rest`) when the event carried a `reason_code`; otherwise it is the text as
published. The extensions `reason_code` and `reason_text` give the parts apart; `reason_text` is what the
console shows, always in French when the reason is known.

Events published before v1.1 carry an English text and no code ("not yet in MIRC; next automatic try at …").
They stay on Kafka, so a replay projects them again: they are recognised by their stable wording and told
in French from the matching code (`reason_code` stays null: the event did not carry it). Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from proxymage_shared import reasons

if TYPE_CHECKING:
    from gateway.read_model import ReasonedPart

# (words found in a pre-v1.1 reason, lower-cased; the code saying the same). First match wins, so the
# wrappers ("deadline passed: <cause>", "<cause>; attempt 2 failed, next try at …") come before the causes.
_LEGACY: Final[tuple[tuple[str, str], ...]] = (
    ("deadline passed", "deadline_passed"),
    ("gave up after", "send_failed"),
    ("next try at", "send_retrying"),
    ("not yet in mirc", "not_in_mirc"),
    ("pacs unreachable", "pacs_unreachable"),
    ("viewer store unreachable", "viewer_unreachable"),
    ("move incomplete", "move_incomplete"),
    ("mirc could not perform the move", "move_failed"),
    ("mirc could not be queried", "identity_error"),
    ("the pacs could not be queried", "pacs_error"),
    ("answer that could not be read", "pacs_error"),
    ("could not list the studies", "catalogue_error"),
    ("no pacs patient matches", "patient_not_found"),
    ("consent is not recorded", "no_consent"),
    ("recipient domain", "recipient_not_allowed"),
    ("no longer wanted", "expert_replaced"),
    ("replaced: the on-call", "expert_replaced"),
    ("waiting for the enrolment", "waiting_enrolment"),
    ("waiting for the on-call experts", "waiting_meeting"),
    ("no on-call", "no_expert"),
    ("expertise is not", "expertise_not_requested"),
    ("starttls", "smtp_configuration"),
    ("tls", "smtp_configuration"),
    ("secure-mail relay", "send_failed"),
    ("while sending", "send_failed"),
)
# "MIRC <what the refusal status means>": the fetcher's wording for a refused move.
_LEGACY_REFUSAL_PREFIX: Final = "mirc "


@dataclass(frozen=True, slots=True)
class ToldReason:
    """A reason as the REST answers carry it (all None when there is no reason)."""

    rest: str | None
    code: str | None
    text: str | None


NO_REASON: Final = ToldReason(None, None, None)


def legacy_code(text: str) -> str | None:
    """The code a pre-v1.1 English reason stands for, or None when the wording is not one of ours."""
    lowered = text.strip().lower()
    for words, code in _LEGACY:
        if words in lowered:
            return code
    return "move_refused" if lowered.startswith(_LEGACY_REFUSAL_PREFIX) else None


def _legacy_text(text: str) -> str:
    code = legacy_code(text)
    if code is None:
        return text  # not ours (e.g. already French): shown as is
    if code == "deadline_passed":
        # "deadline passed: <cause>": the cause, told in French too when it is known.
        cause = text.strip()[len("deadline passed") :].lstrip(": ")
        cause_code = legacy_code(cause) if cause else None
        return reasons.text(code, reasons.text(cause_code) if cause_code and cause_code != code else None)
    return reasons.text(code)


def told(part: ReasonedPart | None) -> ToldReason:
    """The reason of a stored part (an event's `reason` and `reason_code` fields), told for REST."""
    if part is None:
        return NO_REASON
    code, text = part.reason_code, part.reason
    if code:
        french = text or reasons.text(code)
        return ToldReason(reasons.Reason(code, french).rest(), code, french)
    if text:
        return ToldReason(text, None, _legacy_text(text))
    return NO_REASON


def of(code: str, detail: str | None = None) -> ToldReason:
    """A reason the gateway says itself (e.g. a withdrawal it saw before the services answered)."""
    reason = reasons.Reason.of(code, detail)
    return ToldReason(reason.rest(), reason.code, reason.text)
