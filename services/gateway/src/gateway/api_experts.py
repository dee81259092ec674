"""Extension read route `GET /api/v1/experts`: the on-call experts of the meetings the gateway knows, for the
console's pick list (gateway.experts)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from proxymage_shared.mssante import address_pattern

from gateway.api_common import ERRORS, ApiContext, Reader, guarded
from gateway.api_types import EXCLUDED_IN_EMAIL
from gateway.experts import KnownExpert, known_experts
from gateway.views import meeting_view


async def read_experts(context: ApiContext) -> list[KnownExpert]:
    records = await guarded(context.store.meetings(context.page_size))
    meetings = [meeting_view(record.meeting_id, record) for record in records]
    return known_experts(meetings, context.expert_domains)


def add_expert_routes(router: APIRouter, context: ApiContext) -> None:
    # No docstring on the endpoint: FastAPI would publish it as the operation's description.
    @router.get(
        "/experts",
        response_model=list[KnownExpert],
        responses=ERRORS,
        summary="Extension: the on-call experts of the known meetings (MSSanté addresses only), by name",
        tags=["read"],
    )
    async def list_experts(who: Reader) -> list[KnownExpert]:
        return await read_experts(context)


def state_the_mssante_rule(app: FastAPI, domains: tuple[str, ...]) -> None:
    """The OpenAPI document states the address rule `PUT /meetings/{id}/experts` enforces: the allowed domains
    are a setting, so the pattern is written into the document when it is first built."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        schemas = document.get("components", {}).get("schemas", {})
        email = schemas.get("ExpertBody", {}).get("properties", {}).get("email")
        if isinstance(email, dict):
            # ExpertEmail's characters and the MSSanté domains: the server checks both.
            email["pattern"] = address_pattern(domains, EXCLUDED_IN_EMAIL)
            email["description"] = "An MSSanté address: its domain matches one of " + ", ".join(domains) + "."
        return document

    app.openapi = openapi  # type: ignore[method-assign]
