"""The gateway's HTTP hardening (gateway.hardening, gateway.validation_errors, gateway.documents): the body
limit (413), the Origin check of cookie-authenticated commands (403), the page headers of every HTML page,
422 answers that do not echo the input, and the OpenAPI document stating the modality codes the server takes.

First without servers (the rules, then the whole HTTP app through ASGI, a console, viewer and documents
included), then over a real socket against the gateway run on the local stack."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gateway import console, documents, ohif
from gateway.api import ApiContext, create_api
from gateway.api_models import ExpertBody, WithinMonthsBody
from gateway.api_types import EMAIL_PATTERN, EXCLUDED_IN_EMAIL
from gateway.asyncapi import specification
from gateway.audit import Auditor
from gateway.auth import COOKIE_NAME, TokenVerifier, token_hash
from gateway.filters import MODALITY_LIST_PATTERN, InvalidFilterError, parse_modalities
from gateway.hardening import (
    PAGE_SECURITY_HEADERS,
    HardeningMiddleware,
    cross_site_refusal,
    with_page_headers,
)
from gateway.hub import Hub
from gateway.settings import ApiToken
from gateway.validation_errors import redacted
from gateway.viewer import ViewerLinks
from hypothesis import given
from hypothesis import strategies as st
from playwright.async_api import Browser
from proxymage_dev.pytest_plugin import ROOT
from proxymage_shared.events import MODALITIES, Event
from proxymage_shared.mssante import DEFAULT_ALLOWED_DOMAINS, address_allowed, address_pattern
from pydantic import ValidationError

from .fakes import FakeReadModel, enrolment_body
from .harness import DCC_TOKEN, VIEWER_TOKEN, GatewayThread

NOW = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
SITE = "http://gateway.test"
PUBLIC_URL = "https://proxymage.exemple.test"
LIMIT = 64 * 1024
TWO_MB = 2 * 1024 * 1024
SCREENSHOTS = ROOT / "var" / "screenshots"

# --------------------------------------------------------------------------------------------------------
# The rules


def _refusal(method: str = "POST", **headers: str) -> str | None:
    return cross_site_refusal(method, {name.replace("_", "-"): value for name, value in headers.items()}, PUBLIC_URL)


def test_a_cookie_command_from_another_site_is_refused() -> None:
    cookie = f"{COOKIE_NAME}=abc"
    assert _refusal(cookie=cookie, host="gateway.test", origin="https://attaquant.exemple.test") is not None
    assert _refusal(cookie=cookie, host="gateway.test", origin="null") is not None
    assert _refusal(cookie=cookie, host="gateway.test") is not None  # neither Origin nor Referer
    assert _refusal(cookie=cookie, host="gateway.test", referer="https://attaquant.exemple.test/page") is not None
    # a look-alike of the host, and the host on another port, are other origins
    assert _refusal(cookie=cookie, host="gateway.test", origin="http://gateway.test.attaquant.test") is not None
    assert _refusal(cookie=cookie, host="gateway.test", origin="http://gateway.test:8081") is not None
    # any cookie counts as a credential (sign-in may name its session cookie otherwise)
    assert _refusal("DELETE", cookie="session=xyz", host="gateway.test", origin="https://a.test") is not None
    # a non-bearer Authorization header does not authenticate: the cookie does
    assert _refusal(cookie=cookie, authorization="Basic abc", host="gateway.test", origin="https://a.test") is not None


def test_own_origin_bearer_clients_and_safe_methods_pass() -> None:
    cookie = f"{COOKIE_NAME}=abc"
    assert _refusal(cookie=cookie, host="gateway.test", origin="http://gateway.test") is None
    assert _refusal(cookie=cookie, host="gateway.test", origin="HTTPS://GATEWAY.TEST") is None  # behind TLS
    assert _refusal(cookie=cookie, host="10.0.0.5:8080", origin=PUBLIC_URL) is None  # the public URL
    assert _refusal(cookie=cookie, host="gateway.test", referer="http://gateway.test/console/x") is None
    # the DCC: a bearer token, whatever else comes with it
    assert _refusal(cookie=cookie, authorization="Bearer t", host="gateway.test", origin="https://a.test") is None
    assert _refusal(host="gateway.test", origin="https://a.test") is None  # no cookie: nothing to forge
    assert _refusal("GET", cookie=cookie, host="gateway.test", origin="https://a.test") is None


def test_html_answers_get_the_page_headers_and_keep_their_own_policy() -> None:
    html = dict(with_page_headers([(b"content-type", b"text/html; charset=utf-8")]))
    for name, value in PAGE_SECURITY_HEADERS.items():
        assert html[name.lower().encode()] == value.encode()
    assert b"frame-ancestors 'none'" in html[b"content-security-policy"]
    own = dict(
        with_page_headers([(b"content-type", b"text/html"), (b"content-security-policy", b"default-src 'none'")])
    )
    assert own[b"content-security-policy"] == b"default-src 'none'"
    assert own[b"x-frame-options"] == b"DENY"
    assert with_page_headers([(b"content-type", b"application/json")]) == [
        (b"content-type", b"application/json"),
        (b"x-content-type-options", b"nosniff"),
    ]


def test_validation_errors_keep_the_rule_but_not_personal_input() -> None:
    name = {"type": "string_too_long", "loc": ("body", "patient", "birth_name"), "msg": "too long", "input": "X" * 600}
    assert redacted(name) == {"type": "string_too_long", "loc": ("body", "patient", "birth_name"), "msg": "too long"}
    whole = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": {"patient": {"first_name": "A"}}}
    assert "input" not in redacted(whole)
    months = {"type": "less_than_equal", "loc": ("body", "months"), "msg": "≤ 1200", "input": 5000, "ctx": {"le": 1200}}
    assert redacted(months)["input"] == 5000
    assert redacted(months)["ctx"] == {"le": 1200}
    assert "input" not in redacted({**months, "input": 10**400})
    query = {"type": "string_pattern_mismatch", "loc": ("query", "modalities"), "msg": "pattern", "input": "Z" * 300}
    assert redacted(query)["input"] == "Z" * 39 + "…"


@given(st.lists(st.sampled_from([*MODALITIES, *(code.lower() for code in MODALITIES), "", " ", "ZZ", "C T"])))
def test_the_documented_modality_pattern_is_what_the_server_parses(items: list[str]) -> None:
    value = ",".join(items)
    documented = re.fullmatch(MODALITY_LIST_PATTERN.removeprefix("^").removesuffix("$"), value) is not None
    try:
        parse_modalities(value)
        parsed = True
    except InvalidFilterError:
        parsed = False
    assert documented == parsed, value


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=12), st.sampled_from(["a@b.fr", "x@y.z", "@a.b"]))
def test_the_documented_email_pattern_is_within_the_contracts(noise: str, address: str) -> None:
    """What the OpenAPI document's e-mail pattern lets through, the contract's model accepts (the event is
    validated again by it): no schema-valid body is refused."""
    contract = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
    for candidate in (noise + address, address + noise, address.replace("@", noise + "@")):
        if re.fullmatch(EMAIL_PATTERN, candidate):
            assert contract.fullmatch(candidate), repr(candidate)
            ExpertBody(name="Dr Essai", email=candidate)


@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
    st.sampled_from(["dr@chu.mssante.fr", "dr@chu.mssante.fr.", "dr@mssante.fr", "dr@gmail.com", "@chu.mssante.fr"]),
)
def test_the_documented_expert_address_pattern_is_exactly_what_the_server_accepts(noise: str, address: str) -> None:
    """An expert's address: the body's type (ExpertEmail) and the MSSanté rule (the command's check) together
    accept exactly what the document's pattern admits, whatever the characters."""
    documented = re.compile(address_pattern(DEFAULT_ALLOWED_DOMAINS, EXCLUDED_IN_EMAIL))
    for candidate in (
        noise + address,
        address + noise,
        address.replace("@", noise + "@"),
        address.replace(".", noise + ".", 1),
    ):
        try:
            ExpertBody(name="Dr Essai", email=candidate)
        except ValidationError:
            accepted = False
        else:
            accepted = address_allowed(candidate, DEFAULT_ALLOWED_DOMAINS)
        assert (documented.fullmatch(candidate) is not None) is accepted, repr(candidate)


def test_whole_numbers_are_integers_but_strings_are_not() -> None:
    assert WithinMonthsBody.model_validate_json('{"kind": "within_months", "months": 6.0}').months == 6
    for refused in ('"6"', "true", "6.5"):
        with pytest.raises(ValidationError):
            WithinMonthsBody.model_validate_json(f'{{"kind": "within_months", "months": {refused}}}')


# --------------------------------------------------------------------------------------------------------
# The whole HTTP app through ASGI (no servers): API, documents, console and viewer behind the middleware


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, Event]] = []

    async def publish(self, topic: str, key: str, event: Event) -> None:
        self.published.append((topic, key, event))


async def _no_audit(records: list[Any]) -> None:
    del records


def _app(recorder: Recorder, viewer_dir: Path) -> FastAPI:
    tokens = [
        ApiToken(name="dcc", role="dcc", sha256=token_hash("dcc-token")),
        ApiToken(name="lecteur", role="viewer", sha256=token_hash("viewer-token")),
    ]
    verifier = TokenVerifier(tokens)
    context = ApiContext(
        store=FakeReadModel(),
        hub=Hub(),
        verifier=verifier,
        auditor=Auditor(_no_audit),
        links=ViewerLinks(""),
        publish=recorder.publish,
        today=lambda: NOW.date(),
        now=lambda: NOW,
    )
    app = create_api(context)
    documents.mount(app, specification())
    console.mount(app)
    ohif.mount(app, viewer_dir, verifier)
    app.add_middleware(HardeningMiddleware, max_body_bytes=LIMIT, public_url=PUBLIC_URL)
    return app


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def site(recorder: Recorder, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "index.html").write_text("<!doctype html><title>OHIF</title>", encoding="utf-8")
    transport = httpx.ASGITransport(app=_app(recorder, tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:
        yield client


def enrolment(**patient: Any) -> dict[str, Any]:
    return enrolment_body(patient=patient)


async def test_a_body_over_the_limit_is_413_before_parsing(site: httpx.AsyncClient, recorder: Recorder) -> None:
    body = json.dumps(enrolment(birth_name="A" * (LIMIT + 1)))
    bearer = {"Authorization": "Bearer dcc-token", "Content-Type": "application/json"}
    answer = await site.post("/api/v1/enrolments", content=body, headers=bearer)
    assert answer.status_code == 413
    assert answer.json() == {"detail": f"request body too large (at most {LIMIT} bytes)"}
    # without a token too, and on routes outside the API (a console form)
    assert (await site.post("/api/v1/enrolments", content=body)).status_code == 413
    assert (await site.post("/console/session", content=body, headers={"Origin": SITE})).status_code == 413
    assert recorder.published == []
    # just under the limit it is parsed (and refused for what it says: 500 characters at most)
    fits = json.dumps(enrolment(birth_name="A" * 600))
    assert (await site.post("/api/v1/enrolments", content=fits, headers=bearer)).status_code == 422


async def test_a_streamed_body_is_counted(site: httpx.AsyncClient, recorder: Recorder) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(LIMIT // 1024 + 2):
            yield b" " * 1024  # JSON whitespace: only its size is wrong

    headers = {"Authorization": "Bearer dcc-token", "Content-Type": "application/json"}
    answer = await site.post("/api/v1/enrolments", content=chunks(), headers=headers)
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith("request body too large")
    assert recorder.published == []


async def test_cookie_commands_need_the_sites_origin(site: httpx.AsyncClient, recorder: Recorder) -> None:
    cookie = {"Cookie": f"{COOKIE_NAME}=dcc-token"}
    foreign = await site.post("/api/v1/enrolments", json=enrolment(), headers={**cookie, "Origin": "https://a.test"})
    assert foreign.status_code == 403
    assert "cross-site request refused" in foreign.json()["detail"]
    assert recorder.published == []
    missing = await site.delete("/api/v1/enrolments/enr-fictif-1", headers=cookie)
    assert missing.status_code == 403
    own = await site.post("/api/v1/enrolments", json=enrolment(), headers={**cookie, "Origin": SITE})
    assert own.status_code == 202
    public = await site.post("/api/v1/enrolments/enr-fictif-1/refresh", headers={**cookie, "Origin": PUBLIC_URL})
    assert public.status_code == 202
    # the DCC's bearer token: no Origin needed, a foreign one changes nothing
    bearer = {"Authorization": "Bearer dcc-token", "Origin": "https://a.test"}
    assert (await site.post("/api/v1/enrolments", json=enrolment(), headers=bearer)).status_code == 202
    assert len(recorder.published) == 3
    # reads with the cookie are not commands
    assert (await site.get("/api/v1/meetings", headers={**cookie, "Origin": "https://a.test"})).status_code == 200
    # the console's logout form from another site
    logout = await site.post("/console/logout", headers={**cookie, "Origin": "https://a.test"})
    assert logout.status_code == 403


async def test_a_422_names_the_field_but_does_not_echo_patient_data(site: httpx.AsyncClient) -> None:
    bearer = {"Authorization": "Bearer dcc-token"}
    secret_name = "NOMSECRETFICTIF" * 40
    body = enrolment(birth_name=secret_name, first_name=12, birth_date="31/12/1960")
    answer = await site.post("/api/v1/enrolments", json=body, headers=bearer)
    assert answer.status_code == 422
    assert "NOMSECRETFICTIF" not in answer.text
    assert "31/12/1960" not in answer.text
    errors = answer.json()["detail"]
    assert {tuple(error["loc"]) for error in errors} == {
        ("body", "patient", "birth_name"),
        ("body", "patient", "first_name"),
        ("body", "patient", "birth_date"),
    }
    assert all({"type", "msg", "loc"} <= set(error) for error in errors)
    not_json = await site.post("/api/v1/enrolments", content=b'{"patient": "DUPONT', headers=bearer)
    assert not_json.status_code == 422
    assert "DUPONT" not in not_json.text
    tag = {"imaging": {"modalities": [], "date_filter": {"kind": "K" * 5000}}, "title": "t", "centre": "c"}
    unknown_tag = await site.put("/api/v1/rcps/rcp-1/imaging-settings", json=tag, headers=bearer)
    assert unknown_tag.status_code == 422
    assert "K" * 300 not in unknown_tag.text  # pydantic quotes the tag in its message and context
    assert unknown_tag.json()["detail"][0]["loc"] == ["body", "imaging", "date_filter"]
    twice = await site.delete("/api/v1/enrolments/enr-1", params=[("reason", "a"), ("reason", "b")], headers=bearer)
    assert twice.status_code == 422
    assert twice.json()["detail"][0]["loc"] == ["query", "reason"]
    too_long = await site.get("/api/v1/enrolments/enr-1", params={"modalities": "CT," * 100}, headers=bearer)
    assert too_long.status_code == 422
    assert len(too_long.text) < 1000


PAGES = (
    "/docs",
    "/asyncapi",
    "/console/",
    "/console/login",
    "/console/meetings/",
    "/console/meetings/m-fictif",
    "/console/enrolments/new",
    "/console/enrolments/enr-fictif",
    "/console/rcps/rcp-fictif",
    "/console/meetings/m-fictif/patients/enr-fictif",
    "/console/meetings/m-fictif/details",
    "/console/meetings/new",
    "/console/rcps/",
    "/console/meetings/-inconnue",  # its 404 page
    "/viewer/",
    "/viewer/viewer",
)


@pytest.mark.parametrize("path", PAGES)
async def test_every_html_page_has_a_csp_and_frame_protection(site: httpx.AsyncClient, path: str) -> None:
    site.cookies.set(COOKIE_NAME, "viewer-token")  # the viewer's page needs a session
    answer = await site.get(path)
    assert answer.headers["content-type"].startswith("text/html"), path
    policy = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src" in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] in ("same-origin", "no-referrer")
    # nothing is loaded from another site (the hospitals' networks reach no CDN)
    assert "https://" not in policy
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", answer.text), path


async def test_the_documents_are_served_from_this_site(site: httpx.AsyncClient) -> None:
    docs = (await site.get("/docs")).text
    for asset in re.findall(r"""(?:src|href)="([^"]+)\"""", docs):
        answer = await site.get(asset)
        assert answer.status_code == 200, asset
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert "SwaggerUIBundle" in (await site.get("/docs/swagger-init.js")).text
    asyncapi = (await site.get("/asyncapi")).text
    for topic in ("dcc.patient-enrolled.v1", "imaging.study-status.v1", "expertise.notification.v1"):
        assert f"<code>{topic}</code>" in asyncapi
    assert "<script" not in asyncapi
    assert (await site.get("/asyncapi.json")).json()["asyncapi"] == "3.0.0"


def test_the_openapi_document_states_the_servers_rules() -> None:
    from .test_documents import openapi

    operation = openapi()["paths"]["/api/v1/enrolments/{enrolment_id}"]["get"]
    modalities = next(parameter for parameter in operation["parameters"] if parameter["name"] == "modalities")
    pattern = next(schema["pattern"] for schema in modalities["schema"]["anyOf"] if "pattern" in schema)
    assert pattern == MODALITY_LIST_PATTERN
    assert "413" in openapi()["paths"]["/api/v1/enrolments"]["post"]["responses"]
    schemas = openapi()["components"]["schemas"]
    # The shape the body's type checks and the MSSanté domains the command checks, both in one pattern.
    expected = address_pattern(DEFAULT_ALLOWED_DOMAINS, EXCLUDED_IN_EMAIL)
    assert schemas["ExpertBody"]["properties"]["email"]["pattern"] == expected
    assert schemas["WithinMonthsBody"]["properties"]["months"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1200,
        "title": "Months",
    }


# --------------------------------------------------------------------------------------------------------
# Over a real socket, against the gateway running on the local stack


@pytest.fixture(scope="module")
def gateway_url(stack_env: dict[str, str]) -> Iterator[str]:
    import uuid

    with GatewayThread(uuid.uuid4().hex[:10]) as running:
        yield running.url


def _raw_request(url: str, head: str, body: bytes) -> bytes:
    """Sends a request over a plain socket; returns what the server answered until it closed. The server reads the
    whole (refused) body before answering: sending it all never meets a reset connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode("latin-1") + body)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


@pytest.mark.integration
def test_a_2_mb_body_is_413_over_the_network(gateway_url: str) -> None:
    body = json.dumps(enrolment(birth_name="B" * TWO_MB)).encode()
    answer = httpx.post(
        f"{gateway_url}/api/v1/enrolments",
        content=body,
        headers={"Authorization": f"Bearer {DCC_TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 413
    assert answer.json()["detail"] == "request body too large (at most 1048576 bytes)"
    assert len(answer.content) < 200

    # chunked (no Content-Length): counted as it arrives
    head = (
        "POST /api/v1/enrolments HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nAuthorization: Bearer "
        f"{DCC_TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 65536
    chunked = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * (TWO_MB // len(chunk)) + b"0\r\n\r\n"
    raw = _raw_request(gateway_url, head, chunked)
    assert raw.startswith(b"HTTP/1.1 413 "), raw[:200]
    assert b"request body too large" in raw


@pytest.mark.integration
def test_cookie_commands_from_another_site_are_refused_over_the_network(gateway_url: str) -> None:
    url = f"{gateway_url}/api/v1/enrolments/enr-fictif-9/refresh"
    cookie = {"Cookie": f"{COOKIE_NAME}={DCC_TOKEN}"}
    foreign = httpx.post(url, headers={**cookie, "Origin": "https://attaquant.exemple.test"}, timeout=10)
    assert foreign.status_code == 403
    assert "cross-site request refused" in foreign.json()["detail"]
    own = httpx.post(url, headers={**cookie, "Origin": gateway_url}, timeout=10)
    assert own.status_code == 202
    bearer = httpx.post(
        url, headers={"Authorization": f"Bearer {DCC_TOKEN}", "Origin": "https://attaquant.exemple.test"}, timeout=10
    )
    assert bearer.status_code == 202
    reader = httpx.post(url, headers={"Cookie": f"{COOKIE_NAME}={VIEWER_TOKEN}", "Origin": gateway_url}, timeout=10)
    assert reader.status_code == 403  # the role, as before
    assert "cross-site" not in reader.json()["detail"]


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/docs", "/asyncapi", "/console/", "/console/login"])
def test_pages_of_the_running_gateway_have_the_headers(gateway_url: str, path: str) -> None:
    answer = httpx.get(f"{gateway_url}{path}", timeout=10)
    assert answer.status_code == 200
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"


CSP_PROBE = (
    "window.__csp = []; document.addEventListener('securitypolicyviolation',"
    " (event) => window.__csp.push(event.violatedDirective + ' ' + event.blockedURI));"
)


@pytest.mark.integration
async def test_the_documents_work_in_chromium_under_their_policy(gateway_url: str, browser: Browser) -> None:
    context = await browser.new_context(base_url=gateway_url)
    await context.add_init_script(CSP_PROBE)
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.goto("/docs")
        # Swagger UI read /openapi.json and lists the operations
        await page.get_by_text("/api/v1/enrolments/{enrolment_id}", exact=True).first.wait_for(timeout=20_000)
        await page.locator(".opblock").first.click()  # expands an operation: React re-renders under the policy
        await page.get_by_text("Parameters").first.wait_for(timeout=10_000)
        assert await page.evaluate("window.__csp") == []
        await page.goto("/asyncapi")
        await page.get_by_role("heading", name="Topics", exact=True).wait_for()
        assert await page.evaluate("window.__csp") == []
        # the page's own style applies (allowed by its hash)
        background = await page.locator("pre").first.evaluate("(pre) => getComputedStyle(pre).backgroundColor")
        assert background == "rgb(244, 244, 244)"
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "documents-asyncapi.png"))
        await page.goto("/docs")
        await page.screenshot(path=str(SCREENSHOTS / "documents-docs.png"))
        await context.close()
    assert errors == []
    assert [url for url in requests if not url.startswith(gateway_url)] == []
