"""The OHIF Viewer 3 under `/viewer/`: the static app that deploy/local/ohif.sh installs, served by the gateway.

The viewer reads studies through the gateway's DICOMweb proxy on the same origin, with the console's session
cookie. Here:
- the HTML entry (`/viewer/`, `/viewer/index.html` and every SPA route such as `/viewer/viewer?StudyInstanceUIDs=`)
  requires a valid session, else a 303 to the console's login with `next` = the requested path and query;
  it carries the viewer's CSP and is never cached;
- the other files (scripts, styles, wasm, fonts, images) are public, as they hold no patient data; those whose
  name carries a content hash are cached for a year, the others are revalidated (ETag), `app-config.js` is
  never cached, so a new install or configuration reaches the next page load;
- a path that is not a plain file under the installed directory (`..`, encoded slashes, hidden files, other
  HTML pages of OHIF's dist) is a 404; a missing file with an extension is a 404, not the SPA page;
- without an installed viewer every `/viewer` path answers 503 with the command that installs it.

The installed directory is resolved at every request: `var/ohif/current` is a symlink that the install
swaps atomically, so a new version is served without restarting the gateway.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from gateway.auth import COOKIE_NAME, TokenVerifier
from gateway.hardening import PAGE_SECURITY_HEADERS

PREFIX: Final = "/viewer"
INDEX: Final = "index.html"
APP_CONFIG: Final = "app-config.js"
LOGIN_PATH: Final = "/console/login"
INSTALL_COMMAND: Final = "deploy/local/ohif.sh install"

# What OHIF 3.13 needs, measured in Chromium (see the test): its own scripts and WebAssembly codecs
# ('wasm-unsafe-eval' allows compiling wasm, not JavaScript eval), web workers from its own files, inline
# styles (React and its libraries set style attributes and insert <style> elements), images and thumbnails
# drawn into blob:/data: URLs. Network access only to this origin: the DICOMweb proxy.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; "
    "script-src 'self' 'wasm-unsafe-eval'; "
    "worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; "
    "font-src 'self'; "
    "connect-src 'self'; "
    "media-src 'self' blob:; "
    "manifest-src 'self'; "
    "object-src 'none'; "
    "frame-src 'none'; "
    "base-uri 'none'; "
    "form-action 'none'; "
    "frame-ancestors 'none'"
)
_HTML_HEADERS: Final = {
    **PAGE_SECURITY_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NO_STORE: Final = "no-store"
IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"

# Names with a content hash (webpack's `[name].bundle.[contenthash:16].js`, `[hash].wasm|woff2`, our
# `proxymage-init.<hash>.js`): their content never changes under the same name.
_HASHED_NAME = re.compile(r"(?:^|\.)[0-9a-f]{16}\.[a-z0-9]+$")
# One path segment of a file we serve: no hidden files, no `.`/`..`, no backslash or control characters.
_SEGMENT = re.compile(r"[A-Za-z0-9_@+~-][A-Za-z0-9_.@+~-]*")
# Raw-path escapes that decode to a separator, a dot segment's parts or a NUL: refused before decoding.
_FORBIDDEN_ESCAPES = re.compile(rb"%(?:2f|5c|00|2e)", re.IGNORECASE)

_MEDIA_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".jsonc": "application/json",
    ".map": "application/json",
    ".webapp": "application/x-web-app-manifest+json",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
}


def media_type(path: Path) -> str:
    known = _MEDIA_TYPES.get(path.suffix.lower())
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def cache_control(name: str) -> str:
    if name == APP_CONFIG:
        return NO_STORE
    return IMMUTABLE if _HASHED_NAME.search(name) else REVALIDATE


def _not_installed() -> HTMLResponse:
    html = (
        '<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>Visionneuse non installée</title></head>'
        "<body><h1>Visionneuse non installée</h1>"
        "<p>La visionneuse d'images (OHIF) n'est pas installée sur ce serveur. "
        f"Installez-la avec <code>{INSTALL_COMMAND}</code> puis rechargez la page.</p></body></html>"
    )
    return HTMLResponse(html, status_code=503, headers=_HTML_HEADERS | {"Retry-After": "300"})


def _not_found() -> Response:
    return Response(
        "Fichier introuvable",
        status_code=404,
        media_type="text/plain; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": NO_STORE},
    )


def _installed_root(app_dir: Path | None) -> Path | None:
    if app_dir is None:
        return None
    try:
        root = app_dir.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return root if (root / INDEX).is_file() else None


def _relative_file(request: Request) -> tuple[str, ...] | None:
    """The requested path's segments below /viewer/, or None when it cannot name a file of ours."""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    if _FORBIDDEN_ESCAPES.search(raw_path) or b"\\" in raw_path:
        return None
    path = request.url.path
    if not path.startswith(PREFIX + "/"):
        return None
    rest = path[len(PREFIX) + 1 :]
    if rest == "":
        return ()
    segments = tuple(rest.split("/"))
    if any(_SEGMENT.fullmatch(segment) is None for segment in segments):
        return None
    return segments


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(
        f"{LOGIN_PATH}?{urlencode({'next': target})}", status_code=303, headers={"Cache-Control": NO_STORE}
    )


def _same_site_reload() -> HTMLResponse:
    html = (
        '<!doctype html><html lang="fr"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0">'
        "<title>Ouverture de la visionneuse</title></head><body><p>Ouverture de la visionneuse…</p></body></html>"
    )
    headers = {
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        "Cache-Control": NO_STORE,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return HTMLResponse(html, headers=headers)


class _Viewer:
    def __init__(self, app_dir: Path | None, verifier: TokenVerifier) -> None:
        self._app_dir = app_dir
        self._verifier = verifier

    def _signed_in(self, request: Request) -> bool:
        principal = self._verifier.verify(request.cookies.get(COOKIE_NAME))
        return principal is not None and principal.may("read")

    def _index(self, request: Request, root: Path) -> Response:
        if not self._signed_in(request):
            if request.headers.get("sec-fetch-site") == "cross-site":
                # A link followed from another site (the DCC): the browser withheld the SameSite=Strict cookie.
                # Reloading from this page makes the navigation same-site, so an open session is sent; without
                # one, the reload (same-origin now) goes to the login page.
                return _same_site_reload()
            return _login_redirect(request)
        return FileResponse(root / INDEX, media_type="text/html; charset=utf-8", headers=_HTML_HEADERS)

    def serve(self, request: Request) -> Response:
        root = _installed_root(self._app_dir)
        if root is None:
            return _not_installed()
        segments = _relative_file(request)
        if segments is None:
            return _not_found()
        if segments in ((), (INDEX,)):
            return self._index(request, root)
        candidate = root.joinpath(*segments)
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            resolved = None
        if resolved is None:
            # A path without an extension in its last segment is a client-side route of the app.
            return self._index(request, root) if "." not in segments[-1] else _not_found()
        if not resolved.is_relative_to(root) or not resolved.is_file() or resolved.suffix.lower() == ".html":
            # Outside the install (a symlink), a directory, or another HTML page of OHIF's dist: only
            # index.html is served as a page, with its CSP.
            return _not_found()
        return self._file(request, resolved)

    @staticmethod
    def _file(request: Request, path: Path) -> Response:
        stat = path.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        headers = {
            "Cache-Control": cache_control(path.name),
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "same-origin",
            "ETag": etag,
        }
        if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type=media_type(path), headers=headers, stat_result=stat)


def mount(app: FastAPI, app_dir: Path | None, verifier: TokenVerifier) -> None:
    """Serves the OHIF Viewer installed in `app_dir` (settings `viewer_app_dir`) under `/viewer/`."""
    viewer = _Viewer(app_dir, verifier)
    router = APIRouter(include_in_schema=False)

    @router.api_route(PREFIX, methods=["GET", "HEAD"])
    async def viewer_root(request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{PREFIX}/{query}", status_code=307)

    @router.api_route(PREFIX + "/{path:path}", methods=["GET", "HEAD"])
    async def viewer_file(request: Request, path: str) -> Response:
        del path  # the raw request path is checked instead (see _relative_file)
        return viewer.serve(request)

    app.include_router(router)
