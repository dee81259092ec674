"""The viewer's read-only DICOMweb path: `/dicom-web/...` proxied to the viewer store, one study at a time.

The OHIF viewer (gateway.ohif) reads images here, on the gateway's own origin and behind the console's sign-in;
the viewer store's HTTP port stays on loopback. Rules, in this order:

1. A valid session (the console's cookie) or bearer token, else 401.
2. GET or HEAD only, else 405: no STOW-RS, no DELETE, no rejection notes; the store is written by C-MOVE alone.
3. Only the DICOMweb paths OHIF reads (QIDO-RS, WADO-RS, metadata, frames, bulk data, rendered, thumbnail),
   written with plain UIDs, else 404: path tricks (`..`, `%2F`, `%2e`, empty segments) never match because the
   raw, undecoded path is matched against UID-only patterns.
4. Every path names its study, and that study must be `available` for an enrolment (selected, moved completely,
   not withdrawn, not removed), else 404: the same answer as an absent study, so nothing leaks about the store.
   A study-level QIDO (`/studies?...`) must filter on StudyInstanceUID or PatientID (no browsing of the store)
   and its answer keeps only available studies, each under the PatientID it was catalogued with.

Access decisions are cached per study for a few seconds, and the whole cache is dropped whenever this gateway
projects an enrolment change (its own consumer sees every event), so a withdrawal closes the study at once.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_plus, urlsplit

import httpx
from proxymage_shared.logging import get_logger
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.audit import Auditor
from gateway.auth import Principal, TokenVerifier, presented_token, scope_headers
from gateway.study_access import Grant, StudyAccess

log = get_logger(__name__)

PREFIX: Final = "/dicom-web"
AUDIT_WINDOW_SECONDS: Final = 60.0
_UID = r"[0-9]{1,64}(?:\.[0-9]{1,64}){0,63}"
_LEVEL = r"(?:/metadata|/rendered|/thumbnail)?"
# The routes OHIF (and any DICOMweb viewer) reads, on the raw path after PREFIX. Group `study` names the study.
_ROUTES: Final = tuple(
    re.compile(pattern)
    for pattern in (
        rf"/studies/(?P<study>{_UID}){_LEVEL}",
        rf"/studies/(?P<study>{_UID})/(?:series|instances)",
        rf"/studies/(?P<study>{_UID})/series/{_UID}{_LEVEL}",
        rf"/studies/(?P<study>{_UID})/series/{_UID}/instances",
        rf"/studies/(?P<study>{_UID})/series/{_UID}/instances/{_UID}{_LEVEL}",
        rf"/studies/(?P<study>{_UID})/series/{_UID}/instances/{_UID}/frames/[0-9]{{1,6}}(?:,[0-9]{{1,6}}){{0,999}}"
        r"(?:/rendered)?",
        # Orthanc's BulkDataURI: `.../bulk/<tag>[/<item>/<tag>...]`, hexadecimal tags and item numbers.
        rf"/studies/(?P<study>{_UID})/series/{_UID}/instances/{_UID}/bulk/[0-9a-fA-F]{{8}}(?:/[0-9]{{1,6}}/[0-9a-fA-F]{{8}}){{0,8}}",
    )
)
_STUDY_QUERY: Final = "/studies"
_KEPT_RESPONSE_HEADERS: Final = ("content-type", "content-length", "content-encoding")
# A host as it may appear in `Forwarded: host=...` (RFC 7239): anything else is replaced by the store's own.
_HOST: Final = re.compile(r"[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?")
_STUDY_UID_TAG: Final = "0020000D"
_PATIENT_ID_TAG: Final = "00100020"
_NO_STORE: Final = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True, slots=True)
class Target:
    """A request the proxy may forward: its path after PREFIX and the study it reads (None: a study query)."""

    path: str
    study: str | None

    @property
    def opens_study(self) -> bool:
        """The requests a viewer makes once per study or series (audited), not the per-frame ones."""
        return self.path.endswith(("/series", "/metadata", "/instances")) or self.path.count("/") == 2


def parse(raw_path: str) -> Target | None:
    """The target of a raw (undecoded) path below PREFIX, or None when it is not one the viewer may read."""
    if raw_path == _STUDY_QUERY:
        return Target(raw_path, None)
    for route in _ROUTES:
        match = route.fullmatch(raw_path)
        if match is not None:
            return Target(raw_path, match["study"])
    return None


@dataclass(frozen=True, slots=True)
class StudyQuery:
    """A study-level QIDO the proxy may forward: its raw query string, and the studies or patient it names."""

    query: str
    study_instance_uids: tuple[str, ...]
    patient_id: str | None


# Study-level QIDO keys forwarded (names and tags): the rest is dropped (the answer is filtered anyway).
_STUDY_QUERY_KEYS: Final = {
    "StudyInstanceUID": "uid",
    _STUDY_UID_TAG: "uid",
    "0020000d": "uid",
    "PatientID": "patient",
    _PATIENT_ID_TAG: "patient",
    "limit": "page",
    "offset": "page",
    "includefield": "page",
    "fuzzymatching": "page",
}
MAX_STUDIES_PER_QUERY: Final = 100
_WILDCARD: Final = re.compile(r"[*?\\]")


def study_query(query: str) -> StudyQuery | None:
    """The study-level QIDO to forward, or None when it is not an exact query by study or by patient.

    Values are forwarded as the client encoded them (re-encoding would turn `^` or `/` into escapes that the
    store reads literally); a PatientID must be exact (no `*`, `?` or `\\` wildcard: no listing by pattern);
    `limit` is capped so that one query cannot make the proxy check thousands of studies.
    """
    kept: list[str] = []
    study_instance_uids: list[str] = []
    patients: list[str] = []
    limit = 0
    for part in query.split("&"):
        raw_key, _, raw_value = part.partition("=")
        key, value = unquote_plus(raw_key), unquote_plus(raw_value)
        kind = _STUDY_QUERY_KEYS.get(key)
        if key == "limit":
            if not limit and value.isdigit():
                limit = int(value)  # the first one given, capped below
            continue
        if kind is None:
            continue  # dropped
        if kind == "uid":
            found = [study_instance_uid for study_instance_uid in re.split(r"[,\\]", value) if study_instance_uid]
            if not found or any(re.fullmatch(_UID, study_instance_uid) is None for study_instance_uid in found):
                return None
            study_instance_uids += found
        elif kind == "patient":
            if not value.strip() or _WILDCARD.search(value) or len(value) > 64:
                return None
            patients.append(value)
        kept.append(part)
    if len(set(patients)) > 1 or not (study_instance_uids or patients):
        return None
    kept.append(f"limit={min(limit, MAX_STUDIES_PER_QUERY) if limit else MAX_STUDIES_PER_QUERY}")
    return StudyQuery("&".join(kept), tuple(dict.fromkeys(study_instance_uids)), patients[0] if patients else None)


def _value(item: object, tag: str) -> str | None:
    if not isinstance(item, dict):
        return None
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values and isinstance(values[0], str) else None


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers={**_NO_STORE, **(headers or {})})


@dataclass(frozen=True, slots=True)
class StoreAccount:
    """The viewer store's HTTP address and, when it asks for one, the account the gateway uses there."""

    url: str
    username: str | None = None
    password: str | None = None


class DicomWebProxy:
    """The ASGI app mounted at PREFIX (the mount strips it from `path`; `raw_path` keeps the original)."""

    def __init__(
        self,
        store: StoreAccount | None,
        verifier: TokenVerifier,
        access: StudyAccess,
        auditor: Auditor,
        public_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._store_url = store.url.rstrip("/") if store else None
        self._public = urlsplit(public_url) if public_url else None
        self._verifier = verifier
        self._access = access
        self._auditor = auditor
        self._audited: dict[tuple[str, str, int], float] = {}
        auth = (store.username, store.password or "") if store and store.username else None
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=5.0), trust_env=False, auth=auth, transport=transport
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response = await self._respond(Request(scope, receive))
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        headers = scope_headers(request.scope)
        who = self._verifier.verify(presented_token(headers))
        if who is None:
            return _problem(401, "sign in first (console session or bearer token)", {"WWW-Authenticate": "Bearer"})
        if request.method not in ("GET", "HEAD"):
            return _problem(405, "the viewer's DICOMweb path is read-only", {"Allow": "GET, HEAD"})
        target = parse(_raw_path(request.scope))
        if target is None:
            return _problem(404, "not found")
        if self._store_url is None:
            return _problem(503, "no viewer store configured (setting viewer_dicomweb_url)")
        if target.study is None:
            query = study_query(request.url.query)
            if query is None:
                return _problem(404, "a study query must name StudyInstanceUIDs or one exact PatientID")
            return await self._query_studies(request, headers, query, who)
        grants = await self._access.grants(target.study)
        if target.opens_study:
            self._audit(who, target.study, grants)
        if not grants:
            return _problem(404, "not found")
        if target.path.endswith(("/series", "/instances")):
            return await self._query_within(request, headers, target.path, request.url.query)
        return await self._forward(request, headers, target.path, request.url.query)

    def _audit(self, who: Principal, study_instance_uid: str, grants: frozenset[Grant]) -> None:
        """One audit entry per reader, study and answer per minute (a viewer asks for the same study many times)."""
        now = time.monotonic()
        status = 200 if grants else 404
        key = (who.name, study_instance_uid, status)
        if now - self._audited.get(key, -AUDIT_WINDOW_SECONDS) < AUDIT_WINDOW_SECONDS:
            return
        if len(self._audited) >= 10_000:
            self._audited.clear()
        self._audited[key] = now
        enrolments: list[str | None] = [*sorted({grant.enrolment_id for grant in grants})] or [None]
        for enrolment_id in enrolments:
            self._auditor.record(
                who=who.name,
                subject=who.subject,
                role=who.role,
                action="view_study",
                status=status,
                enrolment_id=enrolment_id,
            )

    def _upstream_headers(self, request: Request, headers: dict[str, str]) -> dict[str, str]:
        # Content negotiation only (never the cookie or the Authorization header); identity unless the client
        # asked for compression itself, and `*/*` unless it named a type.
        forwarded = {
            "accept": headers.get("accept", "*/*"),
            "accept-encoding": headers.get("accept-encoding", "identity"),
        }
        # Orthanc writes absolute URLs (RetrieveURL, BulkDataURI) from `Forwarded`: make them point back here, at
        # the gateway's public address (setting `public_url`) rather than at whatever Host the client sent.
        if self._public is not None and self._public.netloc:
            host, proto = self._public.netloc, self._public.scheme
        else:
            host, proto = headers.get("host", ""), request.url.scheme
        if _HOST.fullmatch(host) and proto in ("http", "https"):
            forwarded["forwarded"] = f"host={host};proto={proto}"
        return forwarded

    async def _send(self, request: Request, headers: dict[str, str], path: str, query: str) -> httpx.Response | None:
        url = f"{self._store_url}{path}" + (f"?{query}" if query else "")
        # Always a GET upstream (Orthanc's DICOMweb routes answer GET only); a HEAD gets the headers alone.
        upstream = self._client.build_request("GET", url, headers=self._upstream_headers(request, headers))
        try:
            return await self._client.send(upstream, stream=True)
        except httpx.HTTPError as error:
            log.warning("viewer_store_unreachable", error=type(error).__name__)
            return None

    async def _forward(self, request: Request, headers: dict[str, str], path: str, query: str) -> Response:
        answer = await self._send(request, headers, path, query)
        if answer is None:
            return _problem(502, "the viewer store did not answer")
        kept = {name: answer.headers[name] for name in _KEPT_RESPONSE_HEADERS if name in answer.headers}
        if request.method == "HEAD" and answer.status_code < 400:
            await answer.aclose()
            return Response(status_code=answer.status_code, headers={**kept, **_NO_STORE})
        if answer.status_code >= 400:
            await answer.aclose()
            # The store's error pages are not ours to show; its 404 (e.g. a series of another study) stays a 404.
            status = 404 if answer.status_code == 404 else 502
            return _problem(status, "not found" if status == 404 else "the viewer store refused the request")
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers={**kept, **_NO_STORE},
            background=BackgroundTask(answer.aclose),
        )

    async def _query(
        self, request: Request, headers: dict[str, str], path: str, query: str
    ) -> tuple[int, bytes] | Response:
        """A QIDO answer read whole (JSON, uncompressed: the proxy looks into it), or the 502 to send."""
        plain = {**headers, "accept": "application/dicom+json", "accept-encoding": "identity"}
        answer = await self._send(request, plain, path, query)
        if answer is None:
            return _problem(502, "the viewer store did not answer")
        try:
            return answer.status_code, await answer.aread()
        finally:
            await answer.aclose()

    async def _query_within(self, request: Request, headers: dict[str, str], path: str, query: str) -> Response:
        """A QIDO of a study's series or instances: an empty answer means the study is not in the store (Orthanc
        answers `[]` for an unknown study), which is a 404 like any absent study."""
        answer = await self._query(request, headers, path, query)
        if isinstance(answer, Response):
            return answer
        status, body = answer
        if status == 404 or (status < 400 and body.strip() in (b"", b"[]")):
            return _problem(404, "not found")
        if status >= 400:
            return _problem(502, "the viewer store refused the query")
        if request.method == "HEAD":
            body = b""
        return Response(body, media_type="application/dicom+json", headers=_NO_STORE)

    async def _query_studies(
        self, request: Request, headers: dict[str, str], query: StudyQuery, who: Principal
    ) -> Response:
        if query.study_instance_uids:
            named = await self._access.grants_of(query.study_instance_uids)
            for named_study_instance_uid, named_grants in named.items():
                self._audit(who, named_study_instance_uid, named_grants)
            if not any(named.values()):
                return _problem(404, "not found")  # as for a study path: nothing said about the store
        answer = await self._query(request, headers, _STUDY_QUERY, query.query)
        if isinstance(answer, Response):
            return answer
        status, body = answer
        if status >= 400:
            return _problem(502, "the viewer store refused the query")
        try:
            found = json.loads(body) if body.strip() else []
        except ValueError:
            return _problem(502, "the viewer store's answer is not JSON")
        items = found[:MAX_STUDIES_PER_QUERY] if isinstance(found, list) else []
        listed = [
            study_instance_uid for item in items if (study_instance_uid := _value(item, _STUDY_UID_TAG)) is not None
        ]
        opened = await self._access.grants_of(listed)
        kept = [item for item in items if _opened(item, opened)]
        if query.study_instance_uids and not kept:
            # Named studies that are available but no longer in the store (purged): as absent as the others.
            return _problem(404, "not found")
        if request.method == "HEAD":
            return Response(media_type="application/dicom+json", headers=_NO_STORE)
        return JSONResponse(kept, media_type="application/dicom+json", headers=_NO_STORE)


def _opened(item: object, grants: dict[str, frozenset[Grant]]) -> bool:
    """A study of the store's answer is shown only if available, and under the PatientID it was catalogued with."""
    study_instance_uid = _value(item, _STUDY_UID_TAG)
    patient_id = _value(item, _PATIENT_ID_TAG)
    return study_instance_uid is not None and any(
        grant.patient_id == patient_id for grant in grants.get(study_instance_uid, ())
    )


def _raw_path(scope: Scope) -> str:
    """The undecoded path below PREFIX (`%2F` stays `%2F`, so it cannot pass for a separator)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("root_path", "")) + scope["path"]
    path = path.split("?", 1)[0]
    return path[len(PREFIX) :] if path.startswith(PREFIX) else ""
