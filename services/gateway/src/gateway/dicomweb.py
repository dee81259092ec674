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

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from proxymage_shared.logging import get_logger
from proxymage_shared.mongo import Document
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway import views
from gateway.auth import TokenVerifier, presented_token, scope_headers

log = get_logger(__name__)

PREFIX: Final = "/dicom-web"
ACCESS_TTL_SECONDS: Final = 5.0
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
# Request headers passed to the store: content negotiation only (never the cookie or the Authorization header).
_FORWARDED_REQUEST_HEADERS: Final = ("accept", "accept-encoding")
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
    """A study-level QIDO the proxy may forward: the query string and the StudyInstanceUIDs it names, if any."""

    query: str
    study_uids: tuple[str, ...]


def study_query(query: str) -> StudyQuery | None:
    """The study-level QIDO to forward, or None when it narrows to no patient and no study (browsing)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    named = [value for key, value in pairs if key in ("StudyInstanceUID", _STUDY_UID_TAG)]
    # QIDO-RS takes a list of UIDs as repeated values, comma- or backslash-separated.
    uids = tuple(uid for value in named for uid in re.split(r"[,\\]", value) if uid)
    if any(re.fullmatch(_UID, uid) is None for uid in uids):
        return None
    patient = [value for key, value in pairs if key in ("PatientID", _PATIENT_ID_TAG) and value.strip("*? ")]
    if not uids and not patient:
        return None
    return StudyQuery(urlencode(pairs), uids)


def _value(item: object, tag: str) -> str | None:
    if not isinstance(item, dict):
        return None
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values and isinstance(values[0], str) else None


class StudyAccess:
    """Which studies the viewer may read: PatientIDs under which each study is available, briefly cached."""

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[list[Document]]],
        ttl_seconds: float = ACCESS_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._pending: dict[str, asyncio.Task[frozenset[str]]] = {}
        self._generation = 0

    def forget(self) -> None:
        """Drops every decision (an enrolment changed); lookups already running are not cached."""
        self._generation += 1
        self._cache.clear()
        self._pending.clear()

    async def patient_ids(self, study_instance_uid: str) -> frozenset[str]:
        """The PACS PatientIDs the study is available under; empty when it is not available for any enrolment."""
        cached = self._cache.get(study_instance_uid)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        task = self._pending.get(study_instance_uid)
        if task is None:
            # One lookup per study at a time: a viewer opening a study asks for hundreds of frames at once.
            task = asyncio.ensure_future(self._resolve(study_instance_uid, self._generation))
            self._pending[study_instance_uid] = task
        return await asyncio.shield(task)

    async def _resolve(self, uid: str, generation: int) -> frozenset[str]:
        try:
            documents = await self._lookup(uid)
            found = frozenset(
                patient_id
                for patient_id in (views.viewable_patient_id(document, uid) for document in documents)
                if patient_id is not None
            )
            if generation == self._generation:
                if len(self._cache) >= 10_000:
                    self._cache.clear()
                self._cache[uid] = (self._clock() + self._ttl, found)
            return found
        finally:
            if generation == self._generation:
                self._pending.pop(uid, None)


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers={**_NO_STORE, **(headers or {})})


class DicomWebProxy:
    """The ASGI app mounted at PREFIX (the mount strips it from `path`; `raw_path` keeps the original)."""

    def __init__(
        self, store_url: str | None, verifier: TokenVerifier, access: StudyAccess, public_url: str | None = None
    ) -> None:
        self._store_url = store_url.rstrip("/") if store_url else None
        self._public = urlsplit(public_url) if public_url else None
        self._verifier = verifier
        self._access = access
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), trust_env=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response = await self._respond(Request(scope, receive))
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        headers = scope_headers(request.scope)
        if self._verifier.verify(presented_token(headers)) is None:
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
                return _problem(404, "a study query must name a StudyInstanceUID or a PatientID")
            if query.study_uids and not any([await self._access.patient_ids(uid) for uid in query.study_uids]):
                return _problem(404, "not found")  # as for a study path: nothing said about the store
            return await self._query_studies(request, headers, query)
        if not await self._access.patient_ids(target.study):
            return _problem(404, "not found")
        if target.path.endswith(("/series", "/instances")):
            return await self._query_within(request, headers, target.path, request.url.query)
        return await self._forward(request, headers, target.path, request.url.query)

    def _upstream_headers(self, request: Request, headers: dict[str, str]) -> dict[str, str]:
        forwarded: dict[str, str] = {name: headers[name] for name in _FORWARDED_REQUEST_HEADERS if name in headers}
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

    async def _query_studies(self, request: Request, headers: dict[str, str], query: StudyQuery) -> Response:
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
        kept = [item for item in found if await self._available(item)] if isinstance(found, list) else []
        if query.study_uids and not kept:
            # Named studies that are available but no longer in the store (purged): as absent as the others.
            return _problem(404, "not found")
        return JSONResponse(kept, media_type="application/dicom+json", headers=_NO_STORE)

    async def _available(self, item: object) -> bool:
        uid = _value(item, _STUDY_UID_TAG)
        return uid is not None and _value(item, _PATIENT_ID_TAG) in await self._access.patient_ids(uid)


def _raw_path(scope: Scope) -> str:
    """The undecoded path below PREFIX (`%2F` stays `%2F`, so it cannot pass for a separator)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("root_path", "")) + scope["path"]
    path = path.split("?", 1)[0]
    return path[len(PREFIX) :] if path.startswith(PREFIX) else ""
