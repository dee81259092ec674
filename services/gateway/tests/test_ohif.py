"""The OHIF Viewer under /viewer/ (issue 10): gateway.ohif on a fake install, and the install's rewriting step.

No servers: a tmp dir stands for var/ohif/current, the real `mount` serves it through httpx's ASGI transport.
The rewriting (deploy/local/ohif/rewrite.py, standard library only) runs on a tiny dist shaped like OHIF's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from gateway.auth import COOKIE_NAME, TokenVerifier
from gateway.ohif import CONTENT_SECURITY_POLICY, IMMUTABLE, NO_STORE, REVALIDATE, mount
from gateway.settings import ApiToken
from proxymage_dev.pytest_plugin import ROOT

TOKEN = "jeton-visionneuse-essai"
VIEWER_LINK = "/viewer/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.1338.42"
INDEX_HTML = '<!doctype html><html lang="fr"><head><script src="/viewer/app-config.js"></script></head></html>'
BUNDLE = "app.bundle.0f6159c501addfe9.js"
WASM = "5130ccb17e3f3f5b.wasm"


def _verifier() -> TokenVerifier:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return TokenVerifier([ApiToken(name="lecteur-essai", role="viewer", sha256=digest)])


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A fake install: a version directory and the `current` symlink, as deploy/local/ohif.sh makes them."""
    version = tmp_path / "ohif" / "3.13.2"
    (version / "assets").mkdir(parents=True)
    (version / "index.html").write_text(INDEX_HTML)
    (version / "app-config.js").write_text("window.config = {};")
    (version / BUNDLE).write_text('__webpack_require__.p = "/viewer/";')
    (version / "app.bundle.css").write_text("body{}")
    (version / WASM).write_bytes(b"\x00asm\x01\x00\x00\x00")
    (version / "assets" / "favicon.ico").write_bytes(b"\x00\x00\x01\x00")
    (version / "silent-refresh.html").write_text("<script>alert(1)</script>")
    (version / ".proxymage-install").write_text("stamp")
    (tmp_path / "secret.txt").write_text("outside the install")
    (version / "escape.js").symlink_to(tmp_path / "secret.txt")
    current = tmp_path / "ohif" / "current"
    current.symlink_to("3.13.2")
    return current


def _client(app_dir: Path | None, *, signed_in: bool) -> httpx.AsyncClient:
    app = FastAPI()
    mount(app, app_dir, _verifier())
    cookies = {COOKIE_NAME: TOKEN} if signed_in else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test", cookies=cookies)


@pytest.fixture
async def anonymous(app_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app_dir, signed_in=False) as client:
        yield client


@pytest.fixture
async def signed_in(app_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app_dir, signed_in=True) as client:
        yield client


@pytest.mark.parametrize("path", ["/viewer/", "/viewer/index.html", VIEWER_LINK, "/viewer/segmentation"])
async def test_the_page_requires_a_session_and_sends_back_to_it_after_login(
    anonymous: httpx.AsyncClient, path: str
) -> None:
    answer = await anonymous.get(path)
    assert answer.status_code == 303
    location = urlsplit(answer.headers["location"])
    assert location.path == "/console/login"
    assert parse_qs(location.query) == {"next": [path]}
    assert INDEX_HTML not in answer.text

    anonymous.cookies.set(COOKIE_NAME, "pas-le-bon-jeton")
    assert (await anonymous.get(path)).status_code == 303


async def test_a_link_from_another_site_reloads_once_from_here_to_get_the_strict_cookie(
    anonymous: httpx.AsyncClient, signed_in: httpx.AsyncClient
) -> None:
    # Followed from the DCC's site: the browser withholds the SameSite=Strict cookie; a same-site reload sends it.
    landing = await anonymous.get(VIEWER_LINK, headers={"Sec-Fetch-Site": "cross-site"})
    assert landing.status_code == 200
    assert '<meta http-equiv="refresh" content="0">' in landing.text
    assert INDEX_HTML not in landing.text
    assert landing.headers["cache-control"] == NO_STORE
    # The reload is same-origin: without a session it goes to the login page (no loop), with one to the viewer.
    again = await anonymous.get(VIEWER_LINK, headers={"Sec-Fetch-Site": "same-origin"})
    assert again.status_code == 303
    opened = await signed_in.get(VIEWER_LINK, headers={"Sec-Fetch-Site": "cross-site"})
    assert opened.text == INDEX_HTML


@pytest.mark.parametrize("path", ["/viewer/", "/viewer/index.html", VIEWER_LINK, "/viewer/viewer/extra/route"])
async def test_the_page_and_every_app_route_serve_index_html_with_its_csp(
    signed_in: httpx.AsyncClient, path: str
) -> None:
    answer = await signed_in.get(path)
    assert answer.status_code == 200
    assert answer.text == INDEX_HTML
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "connect-src 'self';" in CONTENT_SECURITY_POLICY
    assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == NO_STORE


async def test_viewer_without_slash_redirects_keeping_the_query(anonymous: httpx.AsyncClient) -> None:
    answer = await anonymous.get("/viewer", params={"StudyInstanceUIDs": "1.2.3"})
    assert answer.status_code == 307
    assert answer.headers["location"] == "/viewer/?StudyInstanceUIDs=1.2.3"


@pytest.mark.parametrize(
    ("path", "media_type", "cache"),
    [
        (f"/viewer/{BUNDLE}", "text/javascript; charset=utf-8", IMMUTABLE),
        (f"/viewer/{WASM}", "application/wasm", IMMUTABLE),
        ("/viewer/app.bundle.css", "text/css; charset=utf-8", REVALIDATE),
        ("/viewer/assets/favicon.ico", "image/x-icon", REVALIDATE),
        ("/viewer/app-config.js", "text/javascript; charset=utf-8", NO_STORE),
    ],
)
async def test_assets_are_public_with_their_type_and_cache_policy(
    anonymous: httpx.AsyncClient, path: str, media_type: str, cache: str
) -> None:
    answer = await anonymous.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == media_type
    assert answer.headers["cache-control"] == cache
    assert answer.headers["x-content-type-options"] == "nosniff"
    again = await anonymous.get(path, headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304
    head = await anonymous.head(path)
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/viewer/../x",
        "/viewer/%2e%2e/x",
        "/viewer/%2E%2E/%2E%2E/etc/passwd",
        "/viewer/a%2Fb",
        "/viewer/assets%2Ffavicon.ico",
        "/viewer/..%5Csecret.txt",
        "/viewer/.proxymage-install",
        "/viewer/escape.js",  # a symlink out of the install
        "/viewer/assets",  # a directory
        "/viewer/silent-refresh.html",  # only index.html is served as a page
        "/viewer/missing.bundle.0123456789abcdef.js",  # a missing file is not the app page
        "/viewer//etc/passwd",
    ],
)
async def test_nothing_outside_the_installed_files(signed_in: httpx.AsyncClient, path: str) -> None:
    # httpx would normalise `..` itself: send the raw target, as a hostile client would.
    request = signed_in.build_request("GET", "http://gateway.test")
    request.url = request.url.copy_with(raw_path=path.encode())
    answer = await signed_in.send(request)
    assert answer.status_code == 404, path
    assert "outside the install" not in answer.text
    assert "<script>" not in answer.text


@pytest.mark.parametrize("installed", [False, True])
async def test_not_installed_is_a_503_in_french_naming_the_install_command(tmp_path: Path, installed: bool) -> None:
    app_dir = tmp_path / "vide" if installed else None
    if app_dir is not None:
        app_dir.mkdir()  # a directory without index.html: an interrupted or missing install
    async with _client(app_dir, signed_in=True) as client:
        for path in ("/viewer/", VIEWER_LINK, f"/viewer/{BUNDLE}"):
            answer = await client.get(path)
            assert answer.status_code == 503
            assert '<html lang="fr">' in answer.text
            assert "Visionneuse non installée" in answer.text
            assert "deploy/local/ohif.sh install" in answer.text


async def test_a_new_install_is_served_without_restart(app_dir: Path, signed_in: httpx.AsyncClient) -> None:
    newer = app_dir.parent / "3.14.0"
    newer.mkdir()
    (newer / "index.html").write_text("<!doctype html><title>nouvelle version</title>")
    swap = app_dir.parent / ".current.tmp"
    swap.symlink_to("3.14.0")
    swap.replace(app_dir)
    assert "nouvelle version" in (await signed_in.get("/viewer/")).text


# --------------------------------------------------------------------------------------------------------
# The install's rewriting step (deploy/local/ohif/rewrite.py) on a tiny dist shaped like OHIF 3.13's

REWRITE_SCRIPT = ROOT / "deploy" / "local" / "ohif" / "rewrite.py"
APP_CONFIG = ROOT / "deploy" / "local" / "ohif" / "app-config.js"
OHIF_INDEX = (
    '<!doctype html><html lang="en"><head>'
    '<meta name="msapplication-TileImage" content="/assets/mstile-144x144.png">'
    '<script>console.time("scriptToView"),window.PUBLIC_URL="/"</script>'
    '<link rel="manifest" href="/manifest.json"><link rel="icon shortcut" href="/assets/favicon.ico">'
    '<script rel="preload" as="script" src="/app-config.js"></script>'
    '<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
    "<title>OHIF Viewer</title>"
    '<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/"</script>'
    '<script defer src="/app.bundle.0f6159c501addfe9.js"></script><link href="/app.bundle.css" rel="stylesheet">'
    '<a href="//cdn.example.test/x">protocol-relative, untouched</a>'
    "</head><body><noscript> You need to enable JavaScript to run this app. </noscript></body></html>"
)


def _load_rewrite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ohif_rewrite", REWRITE_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(OHIF_INDEX)
    (dist / BUNDLE).write_text(
        'var x = 1;\n__webpack_require__.p = "/";\n'
        "await window.browserImportFunction('/dicom-microscopy-viewer/dicomMicroscopyViewer.min.js');\n"
    )
    (dist / "136.bundle.b948da0438a0a660.js").write_text('__webpack_require__.p = "/";')  # a worker's runtime
    (dist / "app.bundle.css").write_text('@font-face{src:url(/a34f9d1faa5f3315.woff2) format("woff2")}')
    (dist / "manifest.json").write_text(json.dumps({"icons": [{"src": "/assets/a.png"}], "start_url": "./index.html"}))
    (dist / "assets" / "browserconfig.xml").write_text('<square70x70logo src="/assets/mstile-70x70.png"/>')
    (dist / "assets" / "favicon.ico").write_bytes(b"\x89PNG\x00\xff")  # binary files stay untouched
    for name in ("sw.js", "init-service-worker.js", "google.js", "_redirects", "serve.json"):
        (dist / name).write_text("importScripts('https://storage.googleapis.com/workbox-cdn/x.js')")
    (dist / "app-config.js").write_text("window.config = {routerBasename: null};")
    return dist


def test_rewrite_moves_every_root_path_under_viewer(dist: Path) -> None:
    report = _load_rewrite().rewrite(dist, APP_CONFIG, "/viewer/")
    assert report

    index = (dist / "index.html").read_text()
    assert '<html lang="fr">' in index
    assert "<script>" not in index  # the CSP has no 'unsafe-inline'
    assert "init-service-worker" not in index
    assert 'href="/viewer/manifest.json"' in index
    assert 'src="/viewer/app-config.js"' in index
    assert 'src="/viewer/app.bundle.0f6159c501addfe9.js"' in index
    assert 'href="/viewer/app.bundle.css"' in index
    assert 'content="/viewer/assets/mstile-144x144.png"' in index
    assert 'href="//cdn.example.test/x"' in index
    assert "Activez JavaScript" in index
    (init,) = dist.glob("proxymage-init.*.js")
    assert f'<script src="/viewer/{init.name}"></script>' in index
    assert index.index(init.name) < index.index("app-config.js") < index.index(BUNDLE)
    init_code = init.read_text()
    assert 'window.PUBLIC_URL="/viewer/"' in init_code
    assert "function browserImportFunction(n){return import(n)}" in init_code
    assert 'PUBLIC_URL="/"' not in init_code

    bundle = (dist / BUNDLE).read_text()
    assert '__webpack_require__.p = "/viewer/";' in bundle
    assert "browserImportFunction('/viewer/dicom-microscopy-viewer/" in bundle
    assert (dist / "136.bundle.b948da0438a0a660.js").read_text() == '__webpack_require__.p = "/viewer/";'
    assert "url(/viewer/a34f9d1faa5f3315.woff2)" in (dist / "app.bundle.css").read_text()
    manifest = json.loads((dist / "manifest.json").read_text())
    assert manifest["icons"][0]["src"] == "/viewer/assets/a.png"
    assert manifest["start_url"] == manifest["scope"] == "/viewer/"
    assert 'src="/viewer/assets/mstile-70x70.png"' in (dist / "assets" / "browserconfig.xml").read_text()
    assert (dist / "assets" / "favicon.ico").read_bytes() == b"\x89PNG\x00\xff"

    for name in ("sw.js", "init-service-worker.js", "google.js", "_redirects", "serve.json"):
        assert not (dist / name).exists(), name
    assert (dist / "app-config.js").read_text() == APP_CONFIG.read_text()


def test_rewrite_refuses_a_dist_it_does_not_recognise(dist: Path) -> None:
    rewrite = _load_rewrite()
    (dist / BUNDLE).write_text("// a future OHIF that sets its public path differently")
    (dist / "136.bundle.b948da0438a0a660.js").unlink()
    with pytest.raises(rewrite.RewriteError, match="webpack public path"):
        rewrite.rewrite(dist, APP_CONFIG, "/viewer/")


def test_our_app_config_names_no_external_url_and_keeps_the_viewer_read_only() -> None:
    config = APP_CONFIG.read_text()
    code = "\n".join(line for line in config.splitlines() if not line.lstrip().startswith("//"))
    assert "://" not in code  # comments may cite Orthanc's URLs; the code names none
    for expected in (
        "routerBasename: '/viewer'",
        "qidoRoot: '/dicom-web'",
        "wadoRoot: '/dicom-web'",
        "wadoUriRoot: '/dicom-web'",
        "imageRendering: 'wadors'",
        "thumbnailRendering: 'wadors'",
        "enableStudyLazyLoad: true",
        "supportsReject: false",
        "dicomUploadEnabled: false",
        "showStudyList: false",
        "investigationalUseDialog: { option: 'never' }",
        "'i18nextLng', 'fr'",
    ):
        assert expected in config, expected
    assert "dicomUploadComponent" not in config
    assert "customizationUrlPrefixes:" not in config
    assert "dangerouslyUseDynamicConfig:" not in config
