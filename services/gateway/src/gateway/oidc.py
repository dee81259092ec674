"""The gateway as an OpenID Connect relying party: authorization code flow with PKCE (S256), `state` and `nonce`.

Pure parts (unit-tested): the PKCE pair, the authorization and logout URLs, and `validate_id_token` (signature
from the provider's JWKS, `iss`, `aud`/`azp`, `exp`/`iat`, `nonce`, and a known role in the role claim).
The adapter, `OidcClient`, reads the provider's discovery document and JWKS (cached; the JWKS is fetched again
when a token names an unknown key, i.e. after a key rotation) and exchanges the code at the token endpoint.
The ID token is taken from the token endpoint's answer over TLS (in production) with our client
authentication, and validated all the same.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from proxymage_shared.errors import ProxymageError

from gateway.auth import PERSON_ROLES

# Asymmetric signatures only: `none` and HMAC (keyed with the client secret) are refused.
ID_TOKEN_ALGORITHMS: Final = ("RS256", "PS256", "ES256", "EdDSA")
CLOCK_LEEWAY_SECONDS: Final = 60
_DISCOVERY_TTL_SECONDS: Final = 3600
_HTTP_TIMEOUT_SECONDS: Final = 10.0
# The claims an ID token is checked for (`validate_id_token`): a refusal may name them, they are our words.
_CHECKED_CLAIMS: Final = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "nonce"})


class SignInError(ProxymageError):
    """The sign-in failed; the message says why for the log (`errors.describe`), in our words only: never the
    provider's text nor a value it sent (a URL, an issuer, a library's description). The user gets a French
    sentence."""


class NoRoleError(SignInError):
    """The person is known to the provider but has no Proxymage role."""


@dataclass(frozen=True, slots=True)
class Person:
    subject: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None

    @classmethod
    def from_discovery(cls, document: Mapping[str, Any], expected_issuer: str) -> ProviderMetadata:
        issuer = document.get("issuer")
        if issuer != expected_issuer:  # OpenID Connect Discovery §4.3: must be exactly the configured issuer
            # The provider's text is not quoted; the usual misconfiguration, a trailing slash, is named.
            slash = isinstance(issuer, str) and issuer.rstrip("/") == expected_issuer.rstrip("/")
            hint = " (it differs only by a trailing slash)" if slash else ""
            raise SignInError(f"the discovery document names another issuer than {expected_issuer!r}{hint}")
        try:
            return cls(
                issuer=issuer,
                authorization_endpoint=str(document["authorization_endpoint"]),
                token_endpoint=str(document["token_endpoint"]),
                jwks_uri=str(document["jwks_uri"]),
                end_session_endpoint=document.get("end_session_endpoint"),
            )
        except KeyError as missing:
            raise SignInError(f"the discovery document lacks {missing}") from None


@dataclass(frozen=True, slots=True)
class Transaction:
    """One sign-in attempt: kept in a signed cookie between the redirect to the provider and the callback."""

    state: str
    nonce: str
    code_verifier: str
    next: str

    @classmethod
    def new(cls, next_page: str) -> Transaction:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64), next_page)

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "nonce": self.nonce, "code_verifier": self.code_verifier, "next": self.next}

    @classmethod
    def from_dict(cls, content: Mapping[str, str]) -> Transaction | None:
        try:
            return cls(content["state"], content["nonce"], content["code_verifier"], content["next"])
        except KeyError:
            return None


def code_challenge(code_verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(ASCII(code_verifier))), without padding."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(
    metadata: ProviderMetadata, *, client_id: str, redirect_uri: str, scopes: str, transaction: Transaction
) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scopes,
        "state": transaction.state,
        "nonce": transaction.nonce,
        "code_challenge": code_challenge(transaction.code_verifier),
        "code_challenge_method": "S256",
    }
    separator = "&" if "?" in metadata.authorization_endpoint else "?"
    return f"{metadata.authorization_endpoint}{separator}{urlencode(query)}"


def logout_url(metadata: ProviderMetadata, *, client_id: str, post_logout_redirect_uri: str) -> str | None:
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), when the provider offers it."""
    if not metadata.end_session_endpoint:
        return None
    query = {"client_id": client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
    separator = "&" if "?" in metadata.end_session_endpoint else "?"
    return f"{metadata.end_session_endpoint}{separator}{urlencode(query)}"


def validate_id_token(
    id_token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    role_claim: str,
    now: Callable[[], float] = time.time,
) -> Person:
    """The person the ID token names (OpenID Connect Core §3.1.3.7), or SignInError."""
    try:
        token = jwt.decode(id_token, keys, algorithms=list(ID_TOKEN_ALGORITHMS))
    except (JoseError, ValueError) as error:
        raise SignInError(f"ID token signature or format refused: {type(error).__name__}") from error
    claims = token.claims
    registry = jwt.JWTClaimsRegistry(
        now=lambda: int(now()),
        leeway=CLOCK_LEEWAY_SECONDS,
        iss={"essential": True, "value": issuer},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(claims)
    except JoseError as error:
        raise SignInError(f"ID token claims refused: {type(error).__name__}{_claims_named(error)}") from error
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise SignInError("ID token not issued for this client (aud)")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise SignInError("ID token with several audiences and another authorized party (azp)")
    subject = str(claims["sub"])
    role = claims.get(role_claim)
    if role not in PERSON_ROLES:
        raise NoRoleError(f"no Proxymage role in the ID token's {role_claim!r} claim")
    name = claims.get("name")
    display = name.strip() if isinstance(name, str) and name.strip() else subject
    return Person(subject=subject, name=display[:200], role=str(role))


class OidcClient:
    """The provider as the gateway talks to it: discovery, JWKS and the token endpoint (httpx)."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        scopes: str,
        role_claim: str,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.scopes = scopes
        self.role_claim = role_claim
        self._client_secret = client_secret
        self._http = http or httpx.AsyncClient(timeout=_HTTP_TIMEOUT_SECONDS, follow_redirects=False)
        self._clock = clock
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keys: KeySet | None = None

    async def close(self) -> None:
        await self._http.aclose()

    async def _get_json(self, url: str, what: str) -> Any:
        """The JSON document at `url` (named `what` in errors: the URL may come from the provider)."""
        try:
            answer = await self._http.get(url, headers={"Accept": "application/json"})
            answer.raise_for_status()
            return answer.json()
        except (httpx.HTTPError, ValueError) as error:
            raise SignInError(f"the identity provider did not answer for its {what}: {type(error).__name__}") from error

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is not None and self._clock() - self._metadata[0] < _DISCOVERY_TTL_SECONDS:
            return self._metadata[1]
        document = await self._get_json(
            self.issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery document"
        )
        if not isinstance(document, dict):
            raise SignInError("the discovery document is not a JSON object")
        metadata = ProviderMetadata.from_discovery(document, self.issuer)
        self._metadata = (self._clock(), metadata)
        return metadata

    async def _key_set(self, refresh: bool) -> KeySet:
        if self._keys is None or refresh:
            document = await self._get_json((await self.metadata()).jwks_uri, "JWKS")
            try:
                self._keys = KeySet.import_key_set(document)
            except (JoseError, ValueError, TypeError, KeyError) as error:
                raise SignInError(f"the provider's JWKS cannot be read: {type(error).__name__}") from error
        return self._keys

    async def exchange(self, code: str, transaction: Transaction, redirect_uri: str) -> Person:
        """Trades the authorization code for the ID token (with the PKCE verifier) and validates it."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": transaction.code_verifier,
            "client_id": self.client_id,
        }
        try:
            if self._client_secret:  # client_secret_basic (a confidential client)
                auth = httpx.BasicAuth(self.client_id, self._client_secret)
                answer = await self._http.post(metadata.token_endpoint, data=form, auth=auth)
            else:  # a public client: PKCE alone
                answer = await self._http.post(metadata.token_endpoint, data=form)
        except httpx.HTTPError as error:
            raise SignInError(f"the token endpoint did not answer: {type(error).__name__}") from error
        if answer.status_code != 200:
            raise SignInError(f"the token endpoint refused the code: HTTP {answer.status_code}")
        try:
            id_token = answer.json()["id_token"]
        except (ValueError, KeyError, TypeError) as error:
            raise SignInError("the token endpoint's answer has no id_token") from error
        return await self.validate(str(id_token), transaction.nonce)

    async def validate(self, id_token: str, nonce: str) -> Person:
        """`validate_id_token` with the provider's keys; once more with a fresh JWKS if the key is unknown."""
        metadata = await self.metadata()
        for refresh in (False, True):
            keys = await self._key_set(refresh)
            try:
                return validate_id_token(
                    id_token,
                    keys,
                    issuer=metadata.issuer,
                    client_id=self.client_id,
                    nonce=nonce,
                    role_claim=self.role_claim,
                    now=time.time,
                )
            except SignInError as error:
                if refresh or not isinstance(error.__cause__, JoseError) or not _unknown_key(error.__cause__):
                    raise
        raise AssertionError("unreachable")


def _claims_named(error: JoseError) -> str:
    """` (claim)` when joserfc names claims we check (`MissingClaimError` joins them with commas), else ""."""
    claims = str(getattr(error, "claim", "") or "").split(",")
    return f" ({', '.join(claims)})" if claims != [""] and set(claims) <= _CHECKED_CLAIMS else ""


def _unknown_key(error: JoseError) -> bool:
    return isinstance(error, InvalidKeyIdError)
