"""Who calls, and what they may do.

Two kinds of callers: machine clients with bearer tokens (configured as SHA-256 hashes with a role and a name;
compared in constant time), and people signed in through OpenID Connect (gateway.oidc), whose session cookie
(gateway.sessions) names the person and the role the identity provider gave. The credential comes from
`Authorization: Bearer <token>` or, for the console's browser code (EventSource cannot set headers), from the
HttpOnly, SameSite=Strict cookie `proxymage_token` (a typed token, or a signed session).

Rights (`RIGHTS`, one per kind of action; `api_commands.COMMANDS` names the right of each command route):
`read`; `settings` (an RCP's imaging filters, a meeting's experts); `enrol` (enrol, correct, withdraw, refresh);
`select` (choose the studies and ask for expertise, remove a study); `audit` (an enrolment's audit trail).
Roles: `dcc` (the DCC's machine client) everything, `viewer` read; people: `3c` everything, `medecin` read and
select, `lecture` read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeAlias, get_args

from gateway.settings import ApiToken, Role

COOKIE_NAME: Final = "proxymage_token"
PersonRole = Literal["3c", "medecin", "lecture"]  # given by the identity provider's role claim
AnyRole: TypeAlias = Role | PersonRole
PERSON_ROLES: Final[frozenset[str]] = frozenset(get_args(PersonRole))
Right = Literal["read", "settings", "enrol", "select", "audit"]
RIGHTS: Final[tuple[Right, ...]] = get_args(Right)
ROLE_RIGHTS: Final[dict[AnyRole, frozenset[Right]]] = {
    "dcc": frozenset(RIGHTS),
    "viewer": frozenset({"read"}),
    "3c": frozenset(RIGHTS),
    "medecin": frozenset({"read", "select"}),
    "lecture": frozenset({"read"}),
}
# How the role is shown to people (the console's header, the audit view).
ROLE_LABELS: Final[dict[AnyRole, str]] = {
    "dcc": "DCC (client machine)",
    "viewer": "Lecture (client machine)",
    "3c": "3C",
    "medecin": "Médecin",
    "lecture": "Lecture seule",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: `name` is what the audit writes (a token's name, or the person's name); `subject`, the
    identity provider's stable id of a person (None for a token)."""

    name: str
    role: AnyRole
    subject: str | None = None

    def may(self, right: Right) -> bool:
        return right in ROLE_RIGHTS[self.role]

    def rights(self) -> tuple[Right, ...]:
        return tuple(right for right in RIGHTS if self.may(right))


class SessionReader(Protocol):
    """Reads a signed session value (gateway.sessions.SessionCodec)."""

    def is_session(self, value: str) -> bool: ...

    def principal(self, value: str) -> Principal | None: ...


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenVerifier:
    def __init__(self, tokens: Iterable[ApiToken], sessions: SessionReader | None = None) -> None:
        self._tokens = [(bytes.fromhex(token.sha256), token) for token in tokens]
        self._sessions = sessions

    def verify(self, presented: str | None) -> Principal | None:
        """The token's holder or the session's person, or None. Every configured hash is compared (no early exit
        on a match)."""
        if not presented:
            return None
        if self._sessions is not None and self._sessions.is_session(presented):
            return self._sessions.principal(presented)
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
