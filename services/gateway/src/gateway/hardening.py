"""HTTP hardening of the whole gateway, as one ASGI middleware in front of every route (API, console, viewer,
documents, DICOMweb, health):

- **Body limit**: a request body larger than `max_body_bytes` is answered 413 before anything parses it — from
  `Content-Length` before the app is called, else (chunked) as soon as the streamed bytes pass the limit. The
  rest of the refused body is read and dropped first (within a budget), so that the client gets the answer.
- **Origin check** (CSRF): a browser sends the console's cookies with any request, even one a foreign page
  makes it send. An unsafe request (POST, PUT, PATCH, DELETE) that carries a cookie and no bearer token is
  therefore refused (403) unless its `Origin` (or, without one, its `Referer`) is the gateway's own: the origin
  of `public_url`, or the request's `Host`. Any cookie counts, whatever its name: sign-in may add session cookies.
  Bearer-token clients (the DCC) are unaffected: a foreign page cannot make a browser add that header.
- **Page headers**: every answer gets `X-Content-Type-Options: nosniff`; every HTML answer gets a CSP (unless
  the page set its own, looser one, e.g. the viewer's), frame protection (`frame-ancestors 'none'`,
  `X-Frame-Options: DENY`) and a `Referrer-Policy`.

Errors are JSON `{"detail": ...}` like the API's others (`gateway.api_common.json_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import urlsplit

from proxymage_shared.logging import get_logger
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import bearer_token

log = get_logger("gateway.hardening")

# Before a 413, the rest of a body up to this many times the limit is read and thrown away, for at most this long:
# a server that closes with unread bytes resets the connection, and the client may lose the answer with it.
# Larger or slower bodies are cut off (the answer says `Connection: close`).
DRAIN_FACTOR: Final = 16
DRAIN_SECONDS: Final = 5.0
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The pages' policy: only our own scripts, styles and connections; no plugin, no <base>, no framing.
STRICT_CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Every HTML page: the policy (a page may set a looser one of its own), no framing (clickjacking), no MIME
# sniffing, no referrer outside the site (Origin stays on our own form posts, checked at login).
PAGE_SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": STRICT_CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_EVERY_ANSWER: Final[Mapping[str, str]] = {"X-Content-Type-Options": "nosniff"}

TOO_LARGE: Final = "request body too large (at most {limit} bytes)"
FOREIGN_ORIGIN: Final = (
    "cross-site request refused: a command sent with the console's cookie must come from this site's own pages "
    "(Origin {origin})"
)
NO_ORIGIN: Final = (
    "cross-site request refused: a command sent with the console's cookie must carry an Origin or Referer header"
)


class BodyTooLargeError(HTTPException):
    """Raised from `receive` when a streamed body passes the limit. An HTTPException, so that FastAPI's body
    reading lets it through (it turns other errors into a 400) and its handlers answer it as JSON."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, TOO_LARGE.format(limit=limit))


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, lower-cased; None otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def own_origin(origin: str, public_origin: str | None, host: str | None) -> bool:
    """Whether `origin` (an Origin header, or a Referer's origin) is the gateway's: its public URL's origin,
    or the host the request was sent to (a local or a direct use; the scheme may differ behind a TLS proxy)."""
    candidate = origin_of(origin)
    if candidate is None:
        return False
    if public_origin is not None and candidate == public_origin:
        return True
    return host is not None and urlsplit(candidate).netloc == host.strip().lower()


def cross_site_refusal(method: str, headers: Mapping[str, str], public_origin: str | None) -> str | None:
    """Why an unsafe, cookie-authenticated request is refused (None: accepted). `headers`: lower-case names."""
    if method.upper() not in UNSAFE_METHODS or not headers.get("cookie", "").strip():
        return None
    if bearer_token(headers.get("authorization")) is not None:
        return None
    origin = headers.get("origin")
    if origin is None:
        referer = headers.get("referer")
        if referer is None:
            return NO_ORIGIN
        origin = origin_of(referer) or "null"
    if own_origin(origin, public_origin, headers.get("host")):
        return None
    return FOREIGN_ORIGIN.format(origin=origin[:80])


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The body's declared length, or None when absent or not a number (the server refuses it anyway)."""
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


def with_page_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An answer's headers: `nosniff` on every answer, and on an HTML one every page header it does not set."""
    headers = list(raw_headers)
    present = {name.lower() for name, _ in headers}
    content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
    wanted = PAGE_SECURITY_HEADERS if content_type.lower().startswith(b"text/html") else _EVERY_ANSWER
    for name, value in wanted.items():
        if name.lower().encode("latin-1") not in present:
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return headers


def _headers(scope: Scope) -> dict[str, str]:
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers") or ()}


class HardeningMiddleware:
    """The body limit, the Origin check and the page headers (see the module's docstring)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, public_url: str | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.public_origin = origin_of(public_url) if public_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        length = declared_length(headers)
        if length is not None and length > self.max_body_bytes:
            if length <= self.max_body_bytes * DRAIN_FACTOR:
                await self._drain(receive, 0)
            await self._refuse(scope, receive, send, 413, TOO_LARGE.format(limit=self.max_body_bytes))
            return
        refusal = cross_site_refusal(str(scope.get("method", "GET")), headers, self.public_origin)
        if refusal is not None:
            await self._refuse(scope, receive, send, 403, refusal)
            return
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if message.get("more_body", False):
                        await self._drain(receive, received)
                    raise BodyTooLargeError(self.max_body_bytes)
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": with_page_headers(message.get("headers", ()))}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLargeError as error:
            # Reached here only when no handler answered it (a route outside the API, e.g. a console form).
            if started:
                raise
            await self._refuse(scope, receive, send, 413, str(error.detail))

    async def _drain(self, receive: Receive, received: int) -> None:
        """Reads and drops the rest of the body, within the drain's budget of bytes and time."""
        budget = self.max_body_bytes * DRAIN_FACTOR
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                while received <= budget:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    received += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        # The method and path only (ids, never a body or a header's value).
        log.warning("request_refused", status=status, method=scope.get("method"), path=scope.get("path"))
        # The connection is closed after the answer: the unread body is not waited for.
        response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
        await response(scope, receive, send)
