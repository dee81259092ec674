"""The REST API and the SSE streams (CONTRACT.md "Gateway REST"), as a FastAPI app.

- Every `/api/` request needs a token (`Authorization: Bearer`, or the console's `proxymage_token` cookie):
  checked by `ApiAuthMiddleware` before anything else (even a malformed body gets 401 without a token).
  `viewer` tokens may read; each command needs a right (gateway.auth: `dcc` and `3c` have all, `medecin` may
  select, `lecture` only reads; 403 otherwise). People signed in through OpenID Connect come with the signed
  session in the same cookie.
- Errors are JSON `{"detail": ...}`: 401, 403, 404 unknown ids, 422 invalid input (the input is not echoed
  back: `gateway.validation_errors`), 503 when Kafka or MongoDB cannot be reached; a stored document the read
  model cannot read (`read_model.StoredDocumentError`) or an unexpected exception is logged and answered with a
  JSON 500 (last resort). The body limit (413) and the Origin check of cookie-authenticated commands (403) are
  the gateway's, in front of every route (`gateway.hardening`).
- Reads of an enrolment or a meeting and every command are audited (ids only).
- Commands publish the inbound event on its topic and answer 202 `{"event_id": ...}` once Kafka has it.

The routes: `api_reads` (reads), `api_live` (SSE), `api_commands` (commands, from one table); what they share is
in `api_common`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyCookie, HTTPBearer
from proxymage_shared.errors import describe
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import filters as flt
from gateway.api_access import add_access_routes
from gateway.api_commands import add_command_routes
from gateway.api_common import API_PREFIX, ApiContext, Publish, UnavailableError, json_error, log
from gateway.api_experts import add_expert_routes, state_the_mssante_rule
from gateway.api_live import add_live_routes
from gateway.api_meeting_day import add_meeting_day_routes
from gateway.api_reads import add_read_routes
from gateway.auth import COOKIE_NAME, TokenVerifier, presented_token, scope_headers
from gateway.read_model import StoredDocumentError
from gateway.validation_errors import single_valued_query, validation_error

__all__ = ["API_PREFIX", "ApiAuthMiddleware", "ApiContext", "Publish", "create_api"]


# --- authentication ----------------------------------------------------------------------------------------


class ApiAuthMiddleware:
    """Authenticates every `/api/` request first; puts the `Principal` in the request state."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/api/"):
            await self.app(scope, receive, send)
            return
        principal = self.verifier.verify(presented_token(scope_headers(scope)))
        if principal is None:
            response = json_error(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


# Declared for the OpenAPI document (the middleware does the checking).
_bearer = HTTPBearer(auto_error=False, description="A token of role `dcc` (read and commands) or `viewer` (read).")
_cookie_scheme = APIKeyCookie(
    name=COOKIE_NAME,
    auto_error=False,
    description="The same token, or a person's signed session (roles `3c`, `medecin`, `lecture`), set by the console.",
)


# --- the app -------------------------------------------------------------------------------------------------


def create_api(context: ApiContext, *, title: str = "Proxymage gateway", version: str = "1") -> FastAPI:
    app = FastAPI(
        title=title,
        version=version,
        description="The DCC's window on Proxymage: read model, commands and live updates (CONTRACT.md).",
        docs_url=None,  # served from local assets by gateway.documents (no CDN)
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.context = context
    app.add_middleware(ApiAuthMiddleware, verifier=context.verifier)
    _handle_errors(app)
    app.include_router(_router(context))
    state_the_mssante_rule(app, context.expert_domains)
    return app


def _handle_errors(app: FastAPI) -> None:
    """Errors are JSON `{"detail": ...}`; see the module's docstring."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        # A body that is not even text (FastAPI says 400) is invalid input like any other: 422.
        if error.status_code == 400:
            return json_error(422, str(error.detail))
        return await http_exception_handler(request, error)

    app.add_exception_handler(RequestValidationError, validation_error)  # no input echoed back

    @app.exception_handler(UnavailableError)
    async def unavailable(_: Request, error: UnavailableError) -> JSONResponse:
        return json_error(503, str(error) or "a dependency is unavailable; try again")

    @app.exception_handler(StoredDocumentError)
    async def unreadable(request: Request, error: StoredDocumentError) -> JSONResponse:
        # The document's collection, id and failing fields, never its values (`read_model.parse`).
        log.error("read_model_unreadable", path=request.url.path, error=describe(error))
        return json_error(500, "internal error")

    @app.exception_handler(flt.InvalidFilterError)
    async def invalid_filter(_: Request, error: flt.InvalidFilterError) -> JSONResponse:
        return json_error(422, str(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unexpected_error", path=request.url.path, error=type(error).__name__)
        return json_error(500, "internal error")


def _router(context: ApiContext) -> APIRouter:
    """Every `/api/v1` route, in the order of the OpenAPI document: reads, live updates, commands."""
    router = APIRouter(
        prefix=API_PREFIX,
        dependencies=[Security(_bearer), Security(_cookie_scheme), Depends(single_valued_query)],
    )
    add_read_routes(router, context)
    add_expert_routes(router, context)
    add_meeting_day_routes(router, context)
    add_access_routes(router, context)
    add_live_routes(router, context)
    add_command_routes(router, context)
    return router
