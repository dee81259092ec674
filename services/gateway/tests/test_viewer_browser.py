"""The built-in viewer in Debian's Chromium: from the console's "Visuel disponible" link to a drawn image.

The gateway runs in-process against the real stack (Kafka, FerretDB, the VIEWER Orthanc with its DICOMweb
plugin) and serves the OHIF viewer installed by deploy/local/ohif.sh; a CT study is stored into VIEWER and made
`available` for an enrolment through the events the services would publish.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator

import pytest
from gateway.auth import COOKIE_NAME
from playwright.async_api import Browser, Page, Request
from proxymage_dev.pytest_plugin import ROOT
from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import large_study
from proxymage_dev.viewer_probe import CONTROL_LABELS_JS, IMAGE_DRAWN_JS, forbidden_controls
from proxymage_shared.settings import DicomPeer

from .harness import VIEWER_TOKEN, RunningGateway, make_available, running_gateway

pytestmark = pytest.mark.integration

E = "enr-viewer-1"
SCREENSHOTS = ROOT / "var" / "screenshots"
DRAWN_TIMEOUT_MS = 60_000


@pytest.fixture
async def gw(stack_env: dict[str, str], unique: str) -> AsyncIterator[RunningGateway]:
    if not (ROOT / "var" / "ohif" / "current" / "index.html").is_file():
        pytest.fail("the OHIF viewer is not installed: run deploy/local/ohif.sh install (make up does it)")
    async with running_gateway(unique, viewer_app_dir=ROOT / "var" / "ohif" / "current") as running:
        yield running


async def test_an_available_study_opens_in_the_viewer_drawn_and_read_only(
    gw: RunningGateway, browser: Browser, stack_env: dict[str, str]
) -> None:
    viewer_store = DicomPeer(
        ae_title=stack_env["PROXYMAGE_VIEWER__AE_TITLE"],
        host=stack_env["PROXYMAGE_VIEWER__HOST"],
        port=int(stack_env["PROXYMAGE_VIEWER__PORT"]),
    )
    study = large_study(20_261_129, 12)  # 12 slices of 512x512, its own UIDs
    assert store_studies([study], viewer_store, "PM_DEV").failed == 0
    await make_available(gw, study, E)

    context = await browser.new_context(base_url=gw.url, locale="fr-FR", timezone_id="Europe/Paris")
    await context.add_cookies(
        [{"name": COOKIE_NAME, "value": VIEWER_TOKEN, "url": gw.url, "httpOnly": True, "sameSite": "Strict"}]
    )
    page = await context.new_page()
    await page.goto(f"/console/enrolments/{E}")
    link = page.get_by_role("link", name=re.compile("Visuel disponible"))
    try:
        await link.wait_for()
    except Exception:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "viewer-console.png"), full_page=True)
        raise
    assert await link.get_attribute("href") == (
        f"{gw.settings.public_url}/viewer/viewer?StudyInstanceUIDs={study.study_instance_uid}"
    )

    requests: list[str] = []
    errors: list[str] = []
    failed: list[str] = []
    context.on("request", lambda request: requests.append(_described(request)))
    context.on(
        "response",
        lambda response: failed.append(f"{response.status} {response.url}") if response.status >= 400 else None,
    )
    # CSP violations do not raise page errors: the viewer's page reports them here.
    await context.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " (event) => window.__csp.push(event.violatedDirective + ' ' + event.blockedURI));"
    )
    async with context.expect_page() as opened:
        await link.click()
    viewer: Page = await opened.value
    viewer.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await viewer.wait_for_function(IMAGE_DRAWN_JS, timeout=DRAWN_TIMEOUT_MS, polling="raf")
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await viewer.screenshot(path=str(SCREENSHOTS / "viewer-ohif.png"))

    assert await viewer.locator(".shepherd-element").count() == 0  # no onboarding tour over the images
    assert viewer.url.startswith(f"{gw.url}/viewer/viewer?StudyInstanceUIDs={study.study_instance_uid}")
    assert await viewer.evaluate("document.documentElement.lang") == "fr"
    labels = await viewer.evaluate(CONTROL_LABELS_JS)
    # Menus and panels hold more controls: open each and read again.
    for opener in (
        "MoreTools-split-button-secondary",
        "trackedMeasurements-btn",
        "panelSegmentation-btn",
        "seriesList-btn",
        "layout-button",
    ):
        control = viewer.locator(f'[data-cy="{opener}"]').first
        assert await control.count(), f"{opener}: OHIF's layout changed, the probe no longer opens it"
        await control.click()
        await viewer.wait_for_timeout(300)
        labels += await viewer.evaluate(CONTROL_LABELS_JS)
        await viewer.keyboard.press("Escape")
    assert labels, "the viewer shows no control at all: the probe is not looking at OHIF"
    assert forbidden_controls(labels) == []
    # Everything came from the gateway's origin: OHIF's files and the DICOMweb path, never Orthanc's own port.
    foreign = [url for url in requests if not url.startswith(gw.url)]
    assert foreign == []
    assert any("/dicom-web/studies/" in url and "/frames/" in url for url in requests)
    assert errors == []
    assert failed == []
    assert await viewer.evaluate("window.__csp") == []


def _described(request: Request) -> str:
    return request.url


def test_the_probe_finds_forbidden_controls() -> None:
    assert forbidden_controls(["Mise en page", "Supprimer l'étude", "Upload DICOM", "Zoom"]) == [
        "Supprimer l'étude",
        "Upload DICOM",
    ]
    assert forbidden_controls(["Anonymize", "Fenêtrage"]) == ["Anonymize"]
    assert forbidden_controls(["Mesures", "Longueur", str(dt.date.today())]) == []
