"""The meetings' on-call experts (pure): the MSSanté rule applied to a command's experts, and the experts
already known from previous meetings (the console's pick list, `GET /api/v1/experts`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Final

from proxymage_shared.events import ExpertRole
from proxymage_shared.mssante import address_allowed
from pydantic import BaseModel, Field

from gateway.api_models import Meeting

# The meeting's fields that name an on-call expert, and the expert's role.
EXPERT_FIELDS: Final[dict[str, ExpertRole]] = {
    "on_call_radiologist": "radiologist",
    "on_call_nuclear_physician": "nuclear_physician",
}


def refused_experts(fields: Mapping[str, Any], allowed_domains: Iterable[str]) -> list[str]:
    """The expert fields of a meeting command whose address is outside the secure messaging (MSSanté)."""
    domains = tuple(allowed_domains)
    refused = []
    for name in EXPERT_FIELDS:
        expert = fields.get(name)
        if isinstance(expert, Mapping) and not address_allowed(str(expert.get("email", "")), domains):
            refused.append(name)
    return refused


class KnownExpert(BaseModel):
    """Extension: an expert designated on call for a meeting known to the gateway."""

    name: str = Field(description="As written for the most recent meeting naming this address.")
    email: str
    roles: list[ExpertRole] = Field(description="The roles this expert was on call for.")
    last_meeting_date: dt.date | None = Field(description="The most recent meeting naming this expert.")


def known_experts(meetings: Iterable[Meeting], allowed_domains: Iterable[str]) -> list[KnownExpert]:
    """One entry per address (compared case-insensitively), named as for its most recent meeting, sorted by
    name; addresses the MSSanté rule now refuses are left out (the console could not save them)."""
    domains = tuple(allowed_domains)
    latest: dict[str, tuple[dt.date, Meeting, str, str]] = {}
    roles: dict[str, set[ExpertRole]] = {}
    for meeting in meetings:
        for field, role in EXPERT_FIELDS.items():
            expert = getattr(meeting, field)
            if expert is None or not address_allowed(expert.email, domains):
                continue
            key = expert.email.strip().lower()
            roles.setdefault(key, set()).add(role)
            when = meeting.date or dt.date.min
            if key not in latest or when > latest[key][0]:
                latest[key] = (when, meeting, expert.name, expert.email.strip())
    experts = [
        KnownExpert(
            name=name,
            email=email,
            roles=[role for role in EXPERT_FIELDS.values() if role in roles[key]],
            last_meeting_date=meeting.date,
        )
        for key, (_, meeting, name, email) in latest.items()
    ]
    return sorted(experts, key=lambda expert: (expert.name.casefold(), expert.email.casefold()))
