"""Bearer tokens: configured as SHA-256 hashes with a role and a name; compared in constant time.

`dcc` may read and send commands; `viewer` may only read. The token comes from `Authorization: Bearer <token>`
or, for the console's browser code (EventSource cannot set headers), from the HttpOnly, SameSite=Strict
cookie `proxymage_token` that the console's session route sets.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.settings import ApiToken, Role

COOKIE_NAME: Final = "proxymage_token"
ROLE_RIGHTS: Final[dict[Role, frozenset[str]]] = {
    "dcc": frozenset({"read", "command"}),
    "viewer": frozenset({"read"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role

    def may(self, right: str) -> bool:
        return right in ROLE_RIGHTS[self.role]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenVerifier:
    def __init__(self, tokens: Iterable[ApiToken]) -> None:
        self._tokens = [(bytes.fromhex(token.sha256), token) for token in tokens]

    def verify(self, presented: str | None) -> Principal | None:
        """The token's holder, or None. Every configured hash is compared (no early exit on a match)."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", errors="surrogatepass")).digest()
        found: ApiToken | None = None
        for expected, token in self._tokens:
            if hmac.compare_digest(digest, expected) and found is None:
                found = token
        return Principal(found.name, found.role) if found is not None else None


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def cookie_value(header: str | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value.strip('"')
    return None


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The bearer token, else the console's cookie (`headers`: lower-case names)."""
    return bearer_token(headers.get("authorization")) or cookie_value(headers.get("cookie"), COOKIE_NAME)


def scope_headers(scope: Mapping[str, object]) -> dict[str, str]:
    """An ASGI scope's headers, names lower-cased (the last of repeated headers wins)."""
    raw = scope.get("headers") or ()
    assert isinstance(raw, list | tuple)
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in raw}
