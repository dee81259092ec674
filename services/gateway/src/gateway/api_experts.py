"""Extension read route `GET /api/v1/experts`: the on-call experts of the meetings the gateway knows, for the
console's pick list (gateway.experts)."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api_common import ERRORS, ApiContext, Reader, guarded
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
