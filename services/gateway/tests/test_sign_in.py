"""Personal sign-in (issue 15, point 3), the pure parts and the API's rights; no servers.

- PKCE S256 (RFC 7636's own example), the authorization URL, `validate_id_token` against ID tokens signed here
  with a locally generated RSA key (and every way one can be wrong), the signed session and transaction cookies.
- The rights: each role's, each command route's, and what the API answers each role (403 with the missing right,
  or 202), `GET /api/v1/me` and the per-enrolment audit trail, through the real FastAPI app over an in-memory
  read model and a recording publisher.
The sign-in against the real provider, in a browser, is in test_sign_in_browser.py.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from gateway import console
from gateway.api import ApiContext, create_api
from gateway.api_commands import COMMANDS
from gateway.audit import Auditor
from gateway.auth import COOKIE_NAME, RIGHTS, ROLE_RIGHTS, Principal, TokenVerifier, token_hash
from gateway.console import signin
from gateway.console.signin import SignIn
from gateway.hub import Hub
from gateway.oidc import (
    NoRoleError,
    OidcClient,
    ProviderMetadata,
    SignInError,
    Transaction,
    authorization_url,
    code_challenge,
    logout_url,
    validate_id_token,
)
from gateway.sessions import SessionCodec, Signer, TransactionCodec
from gateway.settings import ApiToken
from gateway.viewer import ViewerLinks
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey
from proxymage_shared.errors import describe
from proxymage_shared.events import Event

from .fakes import FakeReadModel

ISSUER = "https://idp.exemple.test/realms/rcp"
CLIENT = "proxymage-console"
NONCE = "nonce-essai-0123456789"
NOW = 1_800_000_000.0
METADATA = ProviderMetadata(
    issuer=ISSUER,
    authorization_endpoint=ISSUER + "/auth",
    token_endpoint=ISSUER + "/token",
    jwks_uri=ISSUER + "/jwks",
    end_session_endpoint=ISSUER + "/session/end",
)


# --- PKCE and URLs ---------------------------------------------------------------------------------------


def test_pkce_s256_is_rfc_7636s() -> None:
    # RFC 7636, appendix B
    assert (
        code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_a_transaction_is_new_each_time_and_long_enough() -> None:
    first, second = Transaction.new("/console/"), Transaction.new("/console/")
    assert len({first.state, second.state, first.nonce, second.nonce}) == 4
    assert 43 <= len(first.code_verifier) <= 128  # RFC 7636 §4.1
    assert Transaction.from_dict(first.as_dict()) == first
    assert Transaction.from_dict({"state": "x"}) is None


def test_the_authorization_url_asks_for_a_code_with_pkce_state_and_nonce() -> None:
    transaction = Transaction.new("/console/")
    url = authorization_url(
        METADATA,
        client_id=CLIENT,
        redirect_uri="https://proxymage.exemple.test/console/oidc/callback",
        scopes="openid profile proxymage",
        transaction=transaction,
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == METADATA.authorization_endpoint
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert query == {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": "https://proxymage.exemple.test/console/oidc/callback",
        "scope": "openid profile proxymage",
        "state": transaction.state,
        "nonce": transaction.nonce,
        "code_challenge": code_challenge(transaction.code_verifier),
        "code_challenge_method": "S256",
    }
    assert transaction.code_verifier not in url


def test_logout_url_when_the_provider_has_an_end_session_endpoint() -> None:
    url = logout_url(METADATA, client_id=CLIENT, post_logout_redirect_uri="https://p.test/console/login")
    assert (
        url
        == f"{ISSUER}/session/end?client_id={CLIENT}&post_logout_redirect_uri=https%3A%2F%2Fp.test%2Fconsole%2Flogin"
    )
    without = ProviderMetadata(ISSUER, "a", "t", "j", None)
    assert logout_url(without, client_id=CLIENT, post_logout_redirect_uri="x") is None


def test_discovery_must_name_the_configured_issuer() -> None:
    document = {"issuer": ISSUER, "authorization_endpoint": "a", "token_endpoint": "t", "jwks_uri": "j"}
    assert ProviderMetadata.from_discovery(document, ISSUER).end_session_endpoint is None
    with pytest.raises(SignInError, match="issuer") as other:
        ProviderMetadata.from_discovery({**document, "issuer": "https://evil.test"}, ISSUER)
    assert "evil" not in str(other.value)  # the provider's text is not quoted
    assert "slash" not in str(other.value)
    with pytest.raises(SignInError, match="differs only by a trailing slash"):
        ProviderMetadata.from_discovery({**document, "issuer": f"{ISSUER}/"}, ISSUER)
    with pytest.raises(SignInError, match="jwks_uri"):
        ProviderMetadata.from_discovery({k: v for k, v in document.items() if k != "jwks_uri"}, ISSUER)


# --- the ID token ------------------------------------------------------------------------------------------

SIGNING_KEY = RSAKey.generate_key(2048, parameters={"kid": "cle-essai", "alg": "RS256", "use": "sig"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "cle-essai", "alg": "RS256", "use": "sig"})
PUBLIC_KEYS = KeySet.import_key_set({"keys": [SIGNING_KEY.as_dict(private=False)]})


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "3c.fictif",
        "aud": CLIENT,
        "iat": int(NOW) - 5,
        "exp": int(NOW) + 3600,
        "nonce": NONCE,
        "name": "Claire FICTIVE (3C)",
        "proxymage_role": "3c",
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def signed(payload: dict[str, Any], key: RSAKey = SIGNING_KEY, alg: str = "RS256") -> str:
    return jwt.encode({"alg": alg, "kid": "cle-essai"}, payload, key)


def validate(token: str) -> Any:
    return validate_id_token(
        token, PUBLIC_KEYS, issuer=ISSUER, client_id=CLIENT, nonce=NONCE, role_claim="proxymage_role", now=lambda: NOW
    )


def test_a_valid_id_token_names_the_person_and_the_role() -> None:
    person = validate(signed(claims()))
    assert (person.subject, person.name, person.role) == ("3c.fictif", "Claire FICTIVE (3C)", "3c")
    # several audiences are fine when we are the authorized party; a token without a name shows its subject
    person = validate(signed(claims(aud=[CLIENT, "autre"], azp=CLIENT, name=None, proxymage_role="lecture")))
    assert (person.name, person.role) == ("3c.fictif", "lecture")


@pytest.mark.parametrize(
    ("why", "token"),
    [
        ("another issuer", signed(claims(iss="https://evil.test"))),
        ("another audience", signed(claims(aud="autre-client"))),
        ("several audiences, another azp", signed(claims(aud=[CLIENT, "autre"], azp="autre"))),
        ("expired", signed(claims(exp=int(NOW) - 120))),
        ("another nonce (replay)", signed(claims(nonce="autre"))),
        ("no nonce", signed(claims(nonce=None))),
        ("no subject", signed(claims(sub=None))),
        ("signed by another key", signed(claims(), OTHER_KEY)),
        ("HMAC with a shared secret", jwt.encode({"alg": "HS256"}, claims(), OctKey.import_key("s" * 32))),
        ("not a JWT", "eyJ.nope.x"),
    ],
)
def test_an_invalid_id_token_is_refused(why: str, token: str) -> None:
    with pytest.raises(SignInError):
        validate(token)


def test_alg_none_is_refused() -> None:
    header, payload, _ = signed(claims()).split(".")
    unsigned_header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    with pytest.raises(SignInError):
        validate(f"{unsigned_header}.{payload}.")
    assert header != unsigned_header


def mocked_client(provider: Callable[[httpx.Request], httpx.Response]) -> OidcClient:
    """The adapter with the provider's HTTP answers played by `provider` (httpx.MockTransport)."""
    return OidcClient(
        issuer=ISSUER,
        client_id=CLIENT,
        client_secret=None,
        scopes="openid",
        role_claim="proxymage_role",
        http=httpx.AsyncClient(transport=httpx.MockTransport(provider)),
    )


async def test_sign_in_errors_say_why_in_our_words_without_quoting_the_provider() -> None:
    """What the log shows (`errors.describe`) names the check that failed, never a value the provider sent."""
    sent = "https://evil.test/Claire-FICTIVE"
    document = {"issuer": sent, "authorization_endpoint": "a", "token_endpoint": "t", "jwks_uri": "j"}
    with pytest.raises(SignInError) as discovery:
        ProviderMetadata.from_discovery(document, ISSUER)
    with pytest.raises(SignInError) as claim:
        validate(signed(claims(iss=sent)))
    assert describe(claim.value) == "SignInError: ID token claims refused: InvalidClaimError (iss)"

    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/openid-configuration"):
            return httpx.Response(200, json={**document, "issuer": ISSUER, "jwks_uri": sent})
        return httpx.Response(500, text=sent)

    client = mocked_client(provider)
    with pytest.raises(SignInError) as jwks:
        await client.validate(signed(claims()), NONCE)
    await client.close()
    assert describe(jwks.value) == "SignInError: the identity provider did not answer for its JWKS: HTTPStatusError"
    for error in (discovery.value, claim.value, jwks.value):
        assert "evil" not in describe(error)


@pytest.mark.parametrize("role", [None, "admin", "dcc", "viewer", ""])
def test_a_token_without_a_person_role_gives_no_access(role: str | None) -> None:
    # Machine roles (dcc, viewer) are for bearer tokens only: a person never gets them from the provider.
    with pytest.raises(NoRoleError):
        validate(signed(claims(proxymage_role=role)))


# --- signed cookies ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_a_session_round_trips_and_expires() -> None:
    clock = Clock()
    codec = SessionCodec(Signer(b"secret-essai"), 3600, clock)
    value = codec.encode(subject="medecin.fictif", name="Dr Paul FICTIF", role="medecin")
    assert codec.is_session(value)
    assert codec.principal(value) == Principal("Dr Paul FICTIF", "medecin", "medecin.fictif")
    clock.now += 3601
    assert codec.principal(value) is None


def test_a_session_cannot_be_forged_or_confused() -> None:
    clock = Clock()
    signer = Signer(b"secret-essai")
    codec = SessionCodec(signer, 3600, clock)
    value = codec.encode(subject="lecture.fictif", name="Léa", role="lecture")
    prefix, _, rest = value.partition(".")
    payload, _, mac = rest.partition(".")
    # another role in the payload, same MAC
    forged_payload = SessionCodec(Signer(b"autre"), 3600, clock).encode(subject="x", name="x", role="3c")
    forged = f"{prefix}.{forged_payload.split('.')[1]}.{mac}"
    assert codec.principal(forged) is None
    assert SessionCodec(Signer(b"autre-secret"), 3600, clock).principal(value) is None
    assert codec.principal(value[:-2]) is None
    # a transaction value signed with the same secret is no session
    transaction = TransactionCodec(signer, clock).encode({"state": "s"})
    assert codec.principal("pms1." + transaction.removeprefix("pmt1.")) is None
    # a role a person cannot have
    assert codec.principal(codec.encode(subject="x", name="x", role="dcc")) is None
    assert payload


def test_a_transaction_lasts_ten_minutes() -> None:
    clock = Clock()
    codec = TransactionCodec(Signer(b"k"), clock)
    value = codec.encode({"state": "s", "nonce": "n"})
    assert codec.decode(value) == {"state": "s", "nonce": "n"}
    assert codec.decode(None) is None
    clock.now += 601
    assert codec.decode(value) is None


def test_the_verifier_takes_tokens_and_sessions() -> None:
    codec = SessionCodec(Signer(b"k"), 3600, time.time)
    tokens = [ApiToken(name="dcc-demo", role="dcc", sha256=token_hash("demo-dcc-token"))]
    verifier = TokenVerifier(tokens, codec)
    assert verifier.verify("demo-dcc-token") == Principal("dcc-demo", "dcc")
    session = codec.encode(subject="3c.fictif", name="Claire", role="3c")
    assert verifier.verify(session) == Principal("Claire", "3c", "3c.fictif")
    assert TokenVerifier(tokens).verify(session) is None  # sign-in off: a session value is just a wrong token


# --- rights --------------------------------------------------------------------------------------------------


def test_the_rights_of_each_role() -> None:
    assert {role: set(rights) for role, rights in ROLE_RIGHTS.items()} == {
        "dcc": set(RIGHTS),
        "viewer": {"read"},
        "3c": {"read", "settings", "enrol", "select", "audit"},
        "medecin": {"read", "select"},
        "lecture": {"read"},
    }


def test_the_right_of_each_command_route() -> None:
    assert {command.name: command.right for command in COMMANDS} == {
        "put_imaging_settings": "settings",
        "put_experts": "settings",
        "post_enrolment": "enrol",
        "delete_enrolment": "enrol",
        "post_refresh": "enrol",
        "put_selection": "select",
        "delete_study": "select",
    }


E, M, R = "enr-droits", "m-droits", "rcp-droits"
STUDY = "1.2.826.0.1.3680043.10.1338.1"
REQUESTS: dict[str, tuple[str, str, Any]] = {
    "put_imaging_settings": (
        "PUT",
        f"/api/v1/rcps/{R}/imaging-settings",
        {"title": "RCP ORL", "centre": "3C", "imaging": {"modalities": ["CT"], "date_filter": {"kind": "none"}}},
    ),
    "put_experts": (
        "PUT",
        f"/api/v1/meetings/{M}/experts",
        {
            "rcp_id": R,
            "title": "RCP ORL",
            "date": "2030-03-22",
            "centre": "3C",
            "on_call_radiologist": None,
            "on_call_nuclear_physician": None,
        },
    ),
    "post_enrolment": (
        "POST",
        "/api/v1/enrolments",
        {
            "enrolment_id": E,
            "meeting_id": M,
            "rcp_id": R,
            "meeting_title": "RCP ORL",
            "meeting_date": "2030-03-22",
            "centre": "3C",
            "patient": {
                "birth_name": "FICTIF",
                "used_name": None,
                "first_name": "Essai",
                "birth_date": "1956-04-12",
                "sex": "F",
            },
            "consent": True,
            "requested_by": {"name": "Dr Paul FICTIF"},
        },
    ),
    "delete_enrolment": ("DELETE", f"/api/v1/enrolments/{E}", None),
    "post_refresh": ("POST", f"/api/v1/enrolments/{E}/refresh", None),
    "put_selection": (
        "PUT",
        f"/api/v1/enrolments/{E}/selection",
        {"study_instance_uids": [STUDY], "expertise_requested": True},
    ),
    "delete_study": ("DELETE", f"/api/v1/enrolments/{E}/studies/{STUDY}", None),
}


class Api:
    def __init__(self) -> None:
        self.store = FakeReadModel()
        self.published: list[tuple[str, str, Event]] = []
        self.sessions = SessionCodec(Signer(b"secret-essai"), 3600, time.time)
        self.auditor = Auditor(self.store.record_audit)
        tokens = [ApiToken(name="dcc-demo", role="dcc", sha256=token_hash("demo-dcc-token"))]

        async def publish(topic: str, key: str, event: Event) -> None:
            self.published.append((topic, key, event))

        self.app = create_api(
            ApiContext(
                store=self.store,
                hub=Hub(),
                verifier=TokenVerifier(tokens, self.sessions),
                auditor=self.auditor,
                links=ViewerLinks("https://v.test/?study={study_instance_uid}"),
                publish=publish,
                today=lambda: dt.date(2030, 3, 1),
                now=lambda: dt.datetime.now(dt.UTC),
            )
        )

    def client(self, role: str) -> httpx.AsyncClient:
        cookie = self.sessions.encode(subject=f"{role}.fictif", name=f"Personne {role.upper()} FICTIVE", role=role)
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gw.test", cookies={COOKIE_NAME: cookie}
        )


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.mark.parametrize("role", ["3c", "medecin", "lecture"])
async def test_each_role_may_send_exactly_the_commands_of_its_rights(api: Api, role: str) -> None:
    async with api.client(role) as client:
        for command in COMMANDS:
            method, path, body = REQUESTS[command.name]
            answer = await client.request(method, path, json=body)
            if command.right in ROLE_RIGHTS[role]:  # type: ignore[index]
                assert answer.status_code == 202, (role, command.name, answer.text)
            else:
                assert answer.status_code == 403, (role, command.name, answer.text)
                assert answer.json()["detail"] == (
                    f"the role {role!r} may not do this: it needs the right {command.right!r} "
                    "(GET /api/v1/me lists yours)"
                )
    allowed = [command.name for command in COMMANDS if command.right in ROLE_RIGHTS[role]]  # type: ignore[index]
    assert len(api.published) == len(allowed)


async def test_me_says_who_and_what(api: Api) -> None:
    async with api.client("medecin") as client:
        answer = await client.get("/api/v1/me")
    assert answer.status_code == 200
    assert answer.json() == {
        "name": "Personne MEDECIN FICTIVE",
        "role": "medecin",
        "role_label": "Médecin",
        "rights": ["read", "select"],
        "person": True,
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app),
        base_url="http://gw.test",
        headers={"Authorization": "Bearer demo-dcc-token"},
    ) as machine:
        me = (await machine.get("/api/v1/me")).json()
        assert (me["role"], me["person"], me["rights"]) == ("dcc", False, list(RIGHTS))
        assert (await machine.get("/api/v1/me", headers={"Authorization": "Bearer faux"})).status_code == 401


async def test_the_audit_names_the_person_and_only_the_3c_and_the_dcc_read_it(api: Api) -> None:
    async with api.client("medecin") as medecin:
        method, path, body = REQUESTS["put_selection"]
        assert (await medecin.request(method, path, json=body)).status_code == 202
        assert (await medecin.get(f"/api/v1/enrolments/{E}/audit")).status_code == 403
        assert (await medecin.post(f"/api/v1/enrolments/{E}/refresh")).status_code == 403
    await api.auditor.flush()  # what the background writer does, here at once
    async with api.client("3c") as tc:
        answer = await tc.get(f"/api/v1/enrolments/{E}/audit")
        assert answer.status_code == 200
        entries = answer.json()["entries"]
        selection = [entry for entry in entries if entry["action"] == "select"]
        assert len(selection) == 1
        assert selection[0]["who"] == "Personne MEDECIN FICTIVE"
        assert selection[0]["subject"] == "medecin.fictif"
        assert (selection[0]["role"], selection[0]["status"]) == ("medecin", 202)
        assert selection[0]["event_id"]
        refusals = {(entry["action"], entry["status"], entry["who"]) for entry in entries if entry["status"] == 403}
        assert refusals == {
            ("forbidden_audit", 403, "Personne MEDECIN FICTIVE"),
            ("forbidden_enrol", 403, "Personne MEDECIN FICTIVE"),
        }
        assert (await tc.get("/api/v1/enrolments/enr-inconnue/audit")).status_code == 404


# --- the console's sign-in pages ---------------------------------------------------------------------------


def console_with_sign_in(issuer: str = "http://127.0.0.1:1") -> tuple[FastAPI, SignIn]:
    """The console with personal sign-in on; the provider at `issuer` (port 1: nobody answers)."""
    signer = Signer(b"secret-essai")
    sign_in = SignIn(
        client=OidcClient(issuer=issuer, client_id=CLIENT, client_secret="s", scopes="openid", role_claim="r"),
        sessions=SessionCodec(signer, 3600, time.time),
        transactions=TransactionCodec(signer, time.time),
        public_url="https://proxymage.exemple.test",
    )
    app = FastAPI()
    signin.mount(app, sign_in)
    console.mount(app, sign_in=True)
    return app, sign_in


async def test_the_login_page_offers_the_personal_sign_in_and_says_why_it_failed() -> None:
    app, _ = console_with_sign_in()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://gw.test") as client:
        page = (await client.get("/console/login", params={"next": "/console/meetings/m-1"})).text
        assert 'href="/console/oidc/start?next=/console/meetings/m-1"' in page
        assert "Se connecter avec mon compte professionnel" in page
        assert "Jeton d'accès" in page  # the token stays, for machine clients and development
        refused = html.unescape((await client.get("/console/login", params={"sign_in": "no_role"})).text)
        assert "Votre compte n'a pas de rôle dans Proxymage : demandez-le à la 3C." in refused
        expired = (await client.get("/console/login", params={"expired": "1"})).text
        assert "Aucune session valide (absente ou expirée) : connectez-vous." in expired


async def test_an_unreachable_provider_sends_back_to_the_login_page() -> None:
    app, sign_in = console_with_sign_in()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://gw.test") as client:
        answer = await client.get("/console/oidc/start")
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/login?sign_in=unavailable")
    await sign_in.client.close()


async def test_logout_of_a_person_goes_on_to_the_provider_and_of_a_token_to_the_login_page() -> None:
    app, sign_in = console_with_sign_in()
    session = sign_in.sessions.encode(subject="3c.fictif", name="Claire", role="3c")
    transport = httpx.ASGITransport(app=app)
    headers = {"Origin": "https://gw.test"}
    async with httpx.AsyncClient(transport=transport, base_url="https://gw.test", cookies={COOKIE_NAME: session}) as c:
        person = await c.post("/console/logout", headers=headers)
    assert (person.status_code, person.headers["location"]) == (303, "/console/oidc/logout")
    assert f'{COOKIE_NAME}=""' in person.headers["set-cookie"]
    async with httpx.AsyncClient(transport=transport, base_url="https://gw.test", cookies={COOKIE_NAME: "jeton"}) as c:
        token = await c.post("/console/logout", headers=headers)
    assert token.headers["location"] == "/console/login"
    await sign_in.client.close()


async def test_the_client_fetches_the_jwks_again_when_the_provider_rotated_its_key() -> None:
    """The adapter's caching (the provider's HTTP answers played by httpx.MockTransport): discovery once, the JWKS
    again only when an ID token names a key it does not know."""
    rotated = RSAKey.generate_key(2048, parameters={"kid": "cle-2", "alg": "RS256", "use": "sig"})
    served: list[RSAKey] = [SIGNING_KEY]
    fetched: list[str] = []

    def provider(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.path)
        if request.url.path == "/realms/rcp/.well-known/openid-configuration":
            document = {
                "issuer": ISSUER,
                "authorization_endpoint": ISSUER + "/auth",
                "token_endpoint": ISSUER + "/token",
                "jwks_uri": ISSUER + "/jwks",
            }
            return httpx.Response(200, json=document)
        if request.url.path == "/realms/rcp/jwks":
            return httpx.Response(200, json={"keys": [key.as_dict(private=False) for key in served]})
        return httpx.Response(404)

    client = mocked_client(provider)
    now = time.time()
    fresh = claims(iat=int(now), exp=int(now) + 600)
    assert (await client.validate(signed(fresh), NONCE)).role == "3c"
    assert (await client.validate(signed(fresh), NONCE)).role == "3c"
    assert fetched == ["/realms/rcp/.well-known/openid-configuration", "/realms/rcp/jwks"]
    served[:] = [rotated]
    token = jwt.encode({"alg": "RS256", "kid": "cle-2"}, fresh, rotated)
    assert (await client.validate(token, NONCE)).subject == "3c.fictif"
    assert fetched[2:] == ["/realms/rcp/jwks"]  # the JWKS again, not the discovery
    # a token signed with an unknown key even after the refetch is refused
    stranger = RSAKey.generate_key(2048, parameters={"kid": "cle-3", "alg": "RS256"})
    with pytest.raises(SignInError):
        await client.validate(jwt.encode({"alg": "RS256", "kid": "cle-3"}, fresh, stranger), NONCE)
    await client.close()
