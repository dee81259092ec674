"""Signed cookie values: the console's session after an OpenID Connect sign-in, and the sign-in's transaction.

A value is `<prefix><payload>.<mac>`: the payload is base64url JSON, the MAC an HMAC-SHA256 over the purpose and
the payload with the gateway's session secret. Nothing is stored server-side, so every replica that shares the
secret accepts the session. The payload holds no patient data: the person's name, subject and role, and times.
A session ends at `exp` (the working day) or when the user signs out (the cookie is cleared); a stolen cookie
stays valid until `exp`, as today's token cookie does, which is why it is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from typing import Any, Final

from gateway.auth import PERSON_ROLES, Principal

SESSION_PREFIX: Final = "pms1."
TRANSACTION_PREFIX: Final = "pmt1."
_MAX_VALUE_CHARS: Final = 3800  # a cookie of about 4 kB at most


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-SHA256 over (purpose, payload); the purpose keeps a value of one kind from passing for another."""

    def __init__(self, secret: bytes | None) -> None:
        # No secret configured: one per process (sessions end at restart, and are not shared between replicas).
        self._key = hashlib.sha256(b"proxymage-sessions\0" + (secret or secrets.token_bytes(32))).digest()

    def _mac(self, purpose: str, payload: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\0{payload}".encode("ascii"), hashlib.sha256).digest()
        return _b64encode(digest)

    def sign(self, purpose: str, prefix: str, content: dict[str, Any]) -> str:
        payload = _b64encode(json.dumps(content, separators=(",", ":"), ensure_ascii=True).encode("ascii"))
        value = f"{prefix}{payload}.{self._mac(purpose, payload)}"
        if len(value) > _MAX_VALUE_CHARS:
            raise ValueError("signed value too long for a cookie")
        return value

    def open(self, purpose: str, prefix: str, value: str) -> dict[str, Any] | None:
        """The content, or None when the value is not one we signed for this purpose."""
        if not value.startswith(prefix) or len(value) > _MAX_VALUE_CHARS:
            return None
        payload, _, mac = value[len(prefix) :].partition(".")
        if not payload or not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(purpose, payload).encode()):
            return None
        try:
            content = json.loads(_b64decode(payload))
        except (binascii.Error, ValueError):
            return None
        return content if isinstance(content, dict) else None


class SessionCodec:
    """The console's session cookie: who signed in, with which role, until when."""

    PURPOSE: Final = "session"

    def __init__(self, signer: Signer, lifetime_seconds: float, clock: Callable[[], float]) -> None:
        self._signer = signer
        self._lifetime = lifetime_seconds
        self._clock = clock

    @property
    def lifetime_seconds(self) -> int:
        return int(self._lifetime)

    def encode(self, *, subject: str, name: str, role: str) -> str:
        now = int(self._clock())
        content = {"sub": subject, "name": name, "role": role, "iat": now, "exp": now + int(self._lifetime)}
        return self._signer.sign(self.PURPOSE, SESSION_PREFIX, content)

    def is_session(self, value: str) -> bool:
        return value.startswith(SESSION_PREFIX)

    def principal(self, value: str) -> Principal | None:
        content = self._signer.open(self.PURPOSE, SESSION_PREFIX, value)
        if content is None:
            return None
        subject, name, role, expires = content.get("sub"), content.get("name"), content.get("role"), content.get("exp")
        if not (isinstance(subject, str) and isinstance(name, str) and isinstance(expires, int)):
            return None
        if role not in PERSON_ROLES or expires <= self._clock():
            return None
        return Principal(name, role, subject)  # role: checked against PersonRole above


class TransactionCodec:
    """What the sign-in must find again at the callback: state, nonce, PKCE verifier and the page to go back to;
    valid for `lifetime_seconds` (the time to type a password)."""

    PURPOSE: Final = "oidc-transaction"

    def __init__(self, signer: Signer, clock: Callable[[], float], lifetime_seconds: float = 600) -> None:
        self._signer = signer
        self._clock = clock
        self._lifetime = lifetime_seconds

    def encode(self, content: dict[str, str]) -> str:
        return self._signer.sign(
            self.PURPOSE, TRANSACTION_PREFIX, {**content, "exp": int(self._clock() + self._lifetime)}
        )

    def decode(self, value: str | None) -> dict[str, str] | None:
        content = self._signer.open(self.PURPOSE, TRANSACTION_PREFIX, value or "")
        if content is None:
            return None
        expires = content.pop("exp", None)
        if not isinstance(expires, int) or expires <= self._clock():
            return None
        if not all(isinstance(value, str) for value in content.values()):
            return None
        return content
