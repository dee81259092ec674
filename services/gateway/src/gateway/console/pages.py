"""Routes of the console: login/logout (the token cookie) and the HTML pages.

Authentication stays the API's job: the pages themselves are public shells without data, and the script
sends the user back to the login page when the API answers 401. The login only stores the token the user
typed in an HttpOnly, SameSite=Strict cookie, which the API accepts like a bearer token; no script can read it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, quote, urlsplit

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from proxymage_shared.mssante import DEFAULT_ALLOWED_DOMAINS

from gateway.auth import COOKIE_NAME
from gateway.console import labels
from gateway.console.dates import fr_date
from gateway.hardening import PAGE_SECURITY_HEADERS
from gateway.sessions import SESSION_PREFIX

COOKIE_MAX_AGE_SECONDS: Final = 12 * 3600  # a working day: the cookie does not outlive the meeting
PREFIX: Final = "/console"
HOME: Final = PREFIX + "/"
LOGIN: Final = PREFIX + "/login"
SIGN_OUT: Final = PREFIX + "/oidc/logout"  # gateway.console.signin: on to the provider's logout
# The login page's message after a failed personal sign-in (`?sign_in=<reason>`, gateway.console.signin).
SIGN_IN_MESSAGES: Final = {
    "unavailable": "Le service d'identification ne répond pas : réessayez dans un instant.",
    "expired": "La connexion a expiré ou a été interrompue : recommencez.",
    "refused": "La connexion a été refusée par le service d'identification.",
    "no_role": "Votre compte n'a pas de rôle dans Proxymage : demandez-le à la 3C.",
}

_HERE = Path(__file__).parent
STATIC_DIR: Final = _HERE / "static"
TEMPLATES_DIR: Final = _HERE / "templates"

# The DCC's business ids (proxymage_shared.events.BusinessId): anything else cannot name a page.
_BUSINESS_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# What a token may contain so that it travels in a cookie unquoted (RFC 6265 cookie-octets, minus oddities).
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")
_MAX_FORM_BYTES: Final = 8192
_PREFILL_FIELDS: Final = ("meeting_id", "rcp_id", "meeting_title", "meeting_date", "centre")

# Pages run only our own script and style; no framing (clickjacking), no referrer to the viewer; never cached.
_SECURITY_HEADERS: Final = {**PAGE_SECURITY_HEADERS, "Cache-Control": "no-store"}


def _static_versions() -> dict[str, str]:
    """A content hash per static file, appended to its URL so a new release is never served from cache."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12] for path in STATIC_DIR.iterdir() if path.is_file()
    }


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    """What the pages take from the gateway's settings."""

    # The footer's "Contact" link (settings.console_contact): mailto: or http(s)://; empty: none.
    contact: str = ""
    # The MSSanté rule's domains (settings.smtp.allowed_domains), checked in the experts' form before sending.
    expert_domains: tuple[str, ...] = DEFAULT_ALLOWED_DOMAINS


def _environment(options: ConsoleOptions | None = None) -> jinja2.Environment:
    options = options or ConsoleOptions()
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    versions = _static_versions()

    def static(name: str) -> str:
        return f"{PREFIX}/static/{name}?v={versions.get(name, '0')}"

    environment.globals.update(
        static=static,
        modality_labels=labels.MODALITY_LABELS,
        date_filter_labels=labels.DATE_FILTER_LABELS,
        sex_labels=labels.SEX_LABELS,
        consent_sentence=labels.CONSENT_SENTENCE,
        script_labels={**labels.script_labels(), "expert_domains": list(options.expert_domains)},
        expert_domains=options.expert_domains,
        contact=options.contact,
    )
    environment.filters["fr_date"] = fr_date
    return environment


def is_business_id(value: str) -> bool:
    return _BUSINESS_ID.fullmatch(value) is not None


# Where a login may send the user back to: the console's pages and the viewer's (gateway.ohif).
_NEXT_PREFIXES: Final = (HOME, "/viewer/")
# A path of this site: printable ASCII without space or backslash (browsers read `\\` as `/`), starting
# with one `/` (`//host` would be another site).
_LOCAL_PATH = re.compile(r"/(?!/)[\x21-\x5b\x5d-\x7e]*")
# Dot segments and escaped dots or slashes: a browser would resolve them out of the allowed prefixes.
_PATH_TRICKS = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|%(?:2e|2f|5c)", re.IGNORECASE)


def safe_next(value: str | None) -> str:
    """Where to go after login: only a console or viewer page of this site (no open redirect)."""
    if not value or _LOCAL_PATH.fullmatch(value) is None:
        return HOME
    path = urlsplit(value).path
    if not path.startswith(_NEXT_PREFIXES) or _PATH_TRICKS.search(path):
        return HOME
    return value


def _same_origin(request: Request) -> bool:
    """A form post from another site is refused (login CSRF); browsers send Origin on every POST."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        return {}
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items() if values}


class _Pages:
    def __init__(self, options: ConsoleOptions | None = None) -> None:
        self.environment = _environment(options)

    def render(self, name: str, status_code: int = 200, **context: object) -> HTMLResponse:
        context.setdefault("nav", True)
        context.setdefault("section", "")
        context.setdefault("rcp_id", "")
        context.setdefault("meeting_id", "")
        context.setdefault("enrolment_id", "")
        html = self.environment.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code, headers=_SECURITY_HEADERS)

    def not_found(self) -> HTMLResponse:
        return self.render("not_found.html", status_code=404, page="not-found", title="Page introuvable")


@dataclass(frozen=True, slots=True)
class _Page:
    """A page shell: its template and labels; `ids`, its path parameters, must be business ids (else 404)."""

    path: str
    template: str
    page: str
    title: str
    section: str
    ids: tuple[str, ...] = ()


_MEETINGS_TITLE: Final = "Déroulement"
_RCP_TITLE: Final = "Paramètres imagerie"
# In the order of the routes (a fixed path such as `/meetings/new` comes before `/meetings/{meeting_id}`).
_SHELLS: Final = (
    _Page(HOME, "home.html", "home", "Accueil", "home"),
    _Page(PREFIX + "/aide", "help.html", "help", "Aide", "help"),
    _Page(PREFIX + "/rcps/", "rcp_settings.html", "rcp-settings", _RCP_TITLE, "rcp"),
    _Page(PREFIX + "/rcps/{rcp_id}", "rcp_settings.html", "rcp-settings", _RCP_TITLE, "rcp", ("rcp_id",)),
    _Page(PREFIX + "/meetings/new", "meeting_details.html", "meeting-details", "Réunion", "details"),
    _Page(
        PREFIX + "/meetings/{meeting_id}/details",
        "meeting_details.html",
        "meeting-details",
        "Réunion",
        "details",
        ("meeting_id",),
    ),
    _Page(
        PREFIX + "/meetings/{meeting_id}/fiche",
        "meeting_sheet.html",
        "meeting-sheet",
        "Fiche de la réunion",
        "meetings",
        ("meeting_id",),
    ),
    _Page(PREFIX + "/meetings/{meeting_id}", "meeting.html", "meeting", _MEETINGS_TITLE, "meetings", ("meeting_id",)),
    _Page(
        PREFIX + "/meetings/{meeting_id}/patients/{enrolment_id}",
        "meeting.html",
        "meeting",
        _MEETINGS_TITLE,
        "meetings",
        ("meeting_id", "enrolment_id"),
    ),
    _Page(
        PREFIX + "/enrolments/{enrolment_id}",
        "enrolment.html",
        "enrolment",
        "Fiche d'inscription",
        "enrol",
        ("enrolment_id",),
    ),
)


def _shell(pages: _Pages, shell: _Page) -> Callable[[Request], Awaitable[Response]]:
    async def show(request: Request) -> Response:
        ids = {name: str(request.path_params[name]) for name in shell.ids}
        if not all(is_business_id(value) for value in ids.values()):
            return pages.not_found()
        return pages.render(shell.template, 200, page=shell.page, title=shell.title, section=shell.section, **ids)

    show.__name__ = shell.page.replace("-", "_")
    return show


def _login_page(pages: _Pages, target: str, error: str, status_code: int = 200) -> HTMLResponse:
    return pages.render(
        "login.html", status_code=status_code, page="login", title="Connexion", nav=False, next=target, error=error
    )


def _refused_origin() -> Response:
    return Response("Origine refusée", status_code=403, media_type="text/plain; charset=utf-8")


def _session_routes(router: APIRouter, pages: _Pages) -> None:
    """`/` and `/console` to the home page; the login page, and the login and logout forms (the token cookie)."""

    @router.get("/")
    async def root() -> Response:
        return RedirectResponse(HOME, status_code=303)

    @router.get(PREFIX)
    async def console_root() -> Response:
        return RedirectResponse(HOME, status_code=303)

    @router.get(LOGIN)
    async def login(request: Request) -> Response:
        params = request.query_params
        message = "Aucune session valide (absente, expirée ou jeton refusé) : saisissez votre jeton d'accès."
        if pages.environment.globals.get("sign_in"):
            message = "Aucune session valide (absente ou expirée) : connectez-vous."
        message = SIGN_IN_MESSAGES.get(params.get("sign_in", ""), message if params.get("expired") else "")
        return _login_page(pages, safe_next(params.get("next")), message)

    @router.post(PREFIX + "/session")
    async def open_session(request: Request) -> Response:
        if not _same_origin(request):
            return _refused_origin()
        form = await _form(request)
        token = form.get("token", "").strip()
        target = safe_next(form.get("next"))
        if _TOKEN.fullmatch(token) is None:
            error = "Saisissez le jeton d'accès qui vous a été remis (lettres, chiffres et . _ ~ + / = -)."
            return _login_page(pages, target, error, status_code=400)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            token,
            max_age=COOKIE_MAX_AGE_SECONDS,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    @router.post(PREFIX + "/logout")
    async def close_session(request: Request) -> Response:
        if not _same_origin(request):
            return _refused_origin()
        # A person signed in through the identity provider also signs out there (RP-initiated logout).
        signed_in = (request.cookies.get(COOKIE_NAME) or "").startswith(SESSION_PREFIX)
        target = SIGN_OUT if signed_in and pages.environment.globals.get("sign_in") else LOGIN
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(
            COOKIE_NAME, path="/", secure=request.url.scheme == "https", httponly=True, samesite="strict"
        )
        return response


def _form_routes(router: APIRouter, pages: _Pages) -> None:
    """The pages reached from a form: open a meeting or an enrolment by id, enrol a new patient."""

    @router.get(PREFIX + "/meetings/")
    async def meetings(request: Request) -> Response:
        meeting_id = request.query_params.get("meeting_id", "").strip()
        if meeting_id and is_business_id(meeting_id):
            return RedirectResponse(f"{PREFIX}/meetings/{quote(meeting_id)}", status_code=303)
        return pages.render(
            "meetings.html", page="meetings", title=_MEETINGS_TITLE, section="meetings", unknown=bool(meeting_id)
        )

    @router.get(PREFIX + "/enrolments/new")
    async def new_enrolment(request: Request) -> Response:
        prefill = {name: request.query_params.get(name, "")[:500] for name in _PREFILL_FIELDS}
        return pages.render(
            "enrolment_new.html",
            page="enrolment-new",
            title="Inscription d'un patient",
            section="enrol",
            prefill=prefill,
            new_enrolment_id=f"enr-{uuid.uuid4().hex[:12]}",
            today=dt.date.today().isoformat(),
        )

    @router.get(PREFIX + "/enrolments/")
    async def open_enrolment(request: Request) -> Response:
        enrolment_id = request.query_params.get("enrolment_id", "").strip()
        if is_business_id(enrolment_id):
            return RedirectResponse(f"{PREFIX}/enrolments/{quote(enrolment_id)}", status_code=303)
        return RedirectResponse(HOME, status_code=303)


def _router(pages: _Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    _session_routes(router, pages)
    _form_routes(router, pages)  # before the shells: `/enrolments/new` is not an enrolment's page
    for shell in _SHELLS:
        router.add_api_route(shell.path, _shell(pages, shell), methods=["GET"])
    return router


def mount(app: FastAPI, options: ConsoleOptions | None = None, *, sign_in: bool = False) -> None:
    """Adds the console to the gateway's app: `/` -> `/console/`, the pages, and `/console/static/`.
    `sign_in`: the login page offers the personal sign-in (gateway.console.signin's routes, mounted apart)."""
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    pages = _Pages(options)
    pages.environment.globals["sign_in"] = sign_in
    app.include_router(_router(pages))
