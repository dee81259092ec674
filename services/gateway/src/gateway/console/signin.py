"""The console's personal sign-in through OpenID Connect (gateway.oidc): three routes under `/console/oidc/`.

- `GET /console/oidc/start?next=...`: a new transaction (state, nonce, PKCE verifier, the page to go back to)
  in a signed, HttpOnly cookie limited to `/console/oidc/`, then off to the provider's authorization endpoint.
  That cookie is SameSite=Lax: the provider's redirect back to the callback is a cross-site navigation when the
  provider is another site (Pro Santé Connect), and a Strict cookie would not come with it.
- `GET /console/oidc/callback`: checks `state` (and `iss`, RFC 9207, when the provider sends it), trades the code
  for the ID token with the verifier, validates it, and sets the session: the signed person-and-role value in the
  `proxymage_token` cookie (HttpOnly, SameSite=Strict, Secure over HTTPS), which the API, the viewer and the
  DICOMweb path accept like a typed token.
- `GET /console/oidc/logout`: where `POST /console/logout` sends a person after clearing the cookie: a page that
  goes on to the provider's end-session endpoint (RP-initiated logout), which comes back to the login page.

Every failure ends on the login page (`?sign_in=<reason>`) with a French sentence (`pages.SIGN_IN_MESSAGES`);
the log says why, without the person's name. The token login (`POST /console/session`) stays beside it for
machine clients and development.
"""

from __future__ import annotations

import hmac
import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from proxymage_shared.errors import describe
from proxymage_shared.logging import get_logger

from gateway.auth import COOKIE_NAME
from gateway.console.pages import safe_next
from gateway.oidc import NoRoleError, OidcClient, SignInError, Transaction, authorization_url, logout_url
from gateway.sessions import SessionCodec, Signer, TransactionCodec
from gateway.settings import Settings

log = get_logger(__name__)

PREFIX: Final = "/console/oidc"
START: Final = PREFIX + "/start"
CALLBACK: Final = PREFIX + "/callback"
LOGOUT: Final = PREFIX + "/logout"
TRANSACTION_COOKIE: Final = "proxymage_oidc"
LOGIN: Final = "/console/login"


@dataclass(frozen=True, slots=True)
class SignIn:
    """What the routes need: the provider, the codecs and the gateway's public address."""

    client: OidcClient
    sessions: SessionCodec
    transactions: TransactionCodec
    public_url: str

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + CALLBACK

    @property
    def secure(self) -> bool:
        return self.public_url.startswith("https://")


_LEAVING_PAGE: Final = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={url}">
<title>Déconnexion — Proxymage</title></head>
<body><p>Vous êtes déconnecté de Proxymage.
<a href="{url}">Terminer aussi la session du service d'identification</a>.</p></body></html>
"""
_LEAVING_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _to_login(reason: str) -> RedirectResponse:
    return RedirectResponse(f"{LOGIN}?sign_in={quote(reason)}", status_code=303)


def _clear_transaction(response: Response, secure: bool) -> None:
    response.delete_cookie(TRANSACTION_COOKIE, path=PREFIX + "/", secure=secure, httponly=True, samesite="lax")


def _routes(router: APIRouter, sign_in: SignIn) -> None:
    @router.get(START)
    async def start(request: Request) -> Response:
        try:
            metadata = await sign_in.client.metadata()
        except SignInError as error:
            log.warning("sign_in_unavailable", error=describe(error))
            return _to_login("unavailable")
        transaction = Transaction.new(safe_next(request.query_params.get("next")))
        target = authorization_url(
            metadata,
            client_id=sign_in.client.client_id,
            redirect_uri=sign_in.redirect_uri,
            scopes=sign_in.client.scopes,
            transaction=transaction,
        )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            TRANSACTION_COOKIE,
            sign_in.transactions.encode(transaction.as_dict()),
            max_age=600,
            path=PREFIX + "/",
            secure=sign_in.secure,
            httponly=True,
            samesite="lax",
        )
        return response

    @router.get(CALLBACK)
    async def callback(request: Request) -> Response:
        params = request.query_params
        saved = sign_in.transactions.decode(request.cookies.get(TRANSACTION_COOKIE))
        transaction = Transaction.from_dict(saved) if saved is not None else None
        if transaction is None or not hmac.compare_digest(params.get("state", ""), transaction.state):
            log.warning("sign_in_state_mismatch", transaction=transaction is not None)
            return _to_login("expired")
        if params.get("error"):
            log.info("sign_in_refused_by_provider", error=params.get("error", "")[:64])
            return _to_login("refused")
        issuer = params.get("iss")
        code = params.get("code")
        if (issuer is not None and issuer != sign_in.client.issuer) or not code:
            log.warning("sign_in_bad_response", issuer_mismatch=issuer is not None, code=bool(code))
            return _to_login("refused")
        try:
            person = await sign_in.client.exchange(code, transaction, sign_in.redirect_uri)
        except NoRoleError as error:
            log.warning("sign_in_without_role", error=describe(error))
            return _to_login("no_role")
        except SignInError as error:
            log.warning("sign_in_failed", error=describe(error))
            return _to_login("refused")
        log.info("signed_in", role=person.role)
        response = RedirectResponse(transaction.next, status_code=303)
        _clear_transaction(response, sign_in.secure)
        response.set_cookie(
            COOKIE_NAME,
            sign_in.sessions.encode(subject=person.subject, name=person.name, role=person.role),
            max_age=sign_in.sessions.lifetime_seconds,
            path="/",
            secure=sign_in.secure,
            httponly=True,
            samesite="strict",
        )
        return response

    @router.get(LOGOUT)
    async def logout() -> Response:
        """On to the provider's end-session page (the cookie is already cleared by `POST /console/logout`).
        A page that refreshes to it, not a redirect: the logout form's redirect chain may not leave the console's
        origin (CSP form-action 'self')."""
        try:
            metadata = await sign_in.client.metadata()
        except SignInError:
            return RedirectResponse(LOGIN, status_code=303)
        target = logout_url(
            metadata,
            client_id=sign_in.client.client_id,
            post_logout_redirect_uri=sign_in.public_url.rstrip("/") + LOGIN,
        )
        if target is None:
            return RedirectResponse(LOGIN, status_code=303)
        return HTMLResponse(_LEAVING_PAGE.format(url=html.escape(target, quote=True)), headers=_LEAVING_HEADERS)


def from_settings(settings: Settings, clock: Callable[[], float] = time.time) -> SignIn | None:
    """The sign-in the settings describe, or None when `oidc_issuer` is unset (no personal sign-in)."""
    if not settings.oidc_issuer:
        return None
    secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
    session_secret = settings.oidc_session_secret.get_secret_value().encode() if settings.oidc_session_secret else None
    if session_secret is None:
        log.warning("oidc_session_secret_unset", effect="sessions end at restart and are not shared by replicas")
    signer = Signer(session_secret)
    client = OidcClient(
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id,
        client_secret=secret,
        scopes=settings.oidc_scopes,
        role_claim=settings.oidc_role_claim,
    )
    return SignIn(
        client=client,
        sessions=SessionCodec(signer, settings.oidc_session_hours * 3600, clock),
        transactions=TransactionCodec(signer, clock),
        public_url=settings.public_url or "",
    )


def mount(app: FastAPI, sign_in: SignIn) -> None:
    """Adds the sign-in routes; call it before `gateway.console.mount(app, sign_in=True)`."""
    router = APIRouter(include_in_schema=False)
    _routes(router, sign_in)
    app.include_router(router)
