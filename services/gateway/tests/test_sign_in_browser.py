"""Personal sign-in through the REAL OpenID Connect provider of deploy/local (panva's oidc-provider, oidc.sh),
in Chromium (issue 15, point 3): each role signs in on the provider's login form and sees only what it may use.

The gateway runs in-process on the real Kafka and FerretDB (as in test_console.py) with OIDC settings; the test
seeds one meeting and one enrolment with two catalogued studies through the DCC's token, then:
- `medecin.fictif`: no RCP settings, experts or enrolment links; on the enrolment page "Valider" and the trash
  buttons, but no withdrawal, refresh, identity correction or audit; selects a second study (202).
- `lecture.fictif` (after a wrong password): no command button at all; signs out, also at the provider.
- `3c.fictif`: everything, and the enrolment's audit trail names the doctor who selected, by name and subject.
Screenshots are kept under var/screenshots/ (console-NN-oidc-*.png).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from gateway.auth import COOKIE_NAME
from gateway.sessions import SESSION_PREFIX
from playwright.async_api import Browser, Locator, Page, expect
from proxymage_dev.pytest_plugin import free_port
from proxymage_dev.testing import eventually

from .harness import serving_with_log
from .test_console import (
    Gateway,
    Shots,
    console_settings,
    enrolment_form,
    login_page,
    publish_ct_and_mr,
    publish_matched,
)

pytestmark = pytest.mark.integration

PASSWORDS = {"3c.fictif": "demo-3c", "medecin.fictif": "demo-medecin", "lecture.fictif": "demo-lecture"}
NAMES = {
    "3c.fictif": "Claire FICTIVE (3C)",
    "medecin.fictif": "Dr Paul FICTIF",
    "lecture.fictif": "Léa LECTURE-FICTIVE",
}
SIGN_IN_LINK = "Se connecter avec mon compte professionnel"
CT, MR = "1.2.826.0.1.3680043.9.9997.1", "1.2.826.0.1.3680043.9.9997.2"


@pytest.fixture
async def gateway(
    stack_env: dict[str, str], oidc_provider: dict[str, str], unique: str, tmp_path: Path
) -> AsyncIterator[Gateway]:
    """The gateway with personal sign-in on, its public URL its own (the provider's callback comes back here)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = console_settings(
        unique,
        "dcc-essai",
        health_port=port,
        public_url=url,
        oidc_issuer=oidc_provider["PROXYMAGE_OIDC_ISSUER"],
        oidc_client_id=oidc_provider["PROXYMAGE_OIDC_CLIENT_ID"],
        oidc_client_secret=oidc_provider["PROXYMAGE_OIDC_CLIENT_SECRET"],
        oidc_session_secret=f"secret-de-session-essai-{unique}",
    )
    async with serving_with_log(settings, tmp_path / "gateway.log"):
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
        try:
            await producer.start()
            yield Gateway(url, settings.topic_prefix, producer)
        finally:
            await producer.stop()


async def seed(gateway: Gateway) -> tuple[str, str]:
    """A meeting and an enrolment, identity matched, two studies listed, the CT selected: (meeting, enrolment)."""
    meeting_id = f"m-oidc-{uuid.uuid4().hex[:6]}"
    enrolment_id = f"enr-oidc-{uuid.uuid4().hex[:6]}"
    body = enrolment_form(
        enrolment_id, meeting_id, "rcp-oidc-essai", used_name=None, first_name="Camille", birth_date="1961-02-03"
    )
    enrolled = await gateway.api("POST", "/api/v1/enrolments", body)
    assert enrolled.status_code == 202

    async def enrolment() -> dict[str, Any] | None:
        answer = await gateway.api("GET", f"/api/v1/enrolments/{enrolment_id}")
        return answer.json() if answer.status_code == 200 else None

    async def projected() -> bool:
        return await enrolment() is not None

    await eventually(projected, 30, "the enrolment in the read model")
    # The identity-matcher's answer to that enrolled event (the gateway shows an answer to its current event).
    source = {"event_id": enrolled.json()["event_id"], "occurred_at": dt.datetime.now(dt.UTC).isoformat()}
    await publish_matched(gateway, enrolment_id, meeting_id, source)
    await publish_ct_and_mr(gateway, enrolment_id, CT, MR)
    selection = {"study_instance_uids": [CT], "expertise_requested": False}
    assert (await gateway.api("PUT", f"/api/v1/enrolments/{enrolment_id}/selection", body=selection)).status_code == 202

    async def listed_and_selected() -> bool:
        found = await enrolment()
        return found is not None and len(found.get("studies") or []) == 2 and selected(found) == {CT}

    await eventually(listed_and_selected, 30, "two listed studies, the CT selected")
    return meeting_id, enrolment_id


def selected(enrolment: dict[str, Any]) -> set[str]:
    return {study["study_instance_uid"] for study in enrolment.get("studies") or [] if study.get("selected")}


async def sign_in(
    browser: Browser, gateway: Gateway, login: str, *, wrong_password_first: bool = False
) -> tuple[Page, list[str]]:
    """A fresh browser: the console sends it to the login page, the provider's form, and back signed in; with
    the page's script errors."""
    page, errors = await login_page(browser, gateway)
    context = page.context
    await page.get_by_role("link", name=SIGN_IN_LINK).click()
    # The provider's own page (another origin), reached with code + PKCE S256 + state + nonce.
    await expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:\d+/interaction/"))
    if wrong_password_first:
        await page.get_by_label("Identifiant").fill(login)
        await page.get_by_label("Mot de passe").fill("pas-le-bon")
        await page.get_by_role("button", name="Se connecter").click()
        await expect(page.get_by_role("alert")).to_have_text("Identifiant ou mot de passe incorrect.")
    await page.get_by_label("Identifiant").fill(login)
    await page.get_by_label("Mot de passe").fill(PASSWORDS[login])
    await page.get_by_role("button", name="Se connecter").click()
    await expect(page).to_have_url(f"{gateway.url}/console/")
    cookies = {cookie["name"]: cookie for cookie in await context.cookies()}
    session = cookies[COOKIE_NAME]
    assert session["value"].startswith(SESSION_PREFIX)
    assert (session["httpOnly"], session["sameSite"]) == (True, "Strict")
    assert "proxymage_oidc" not in cookies  # the sign-in's transaction is cleared
    assert await page.evaluate("document.cookie") == ""
    await expect(page.locator("#who")).to_contain_text(NAMES[login])
    return page, errors


def nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Navigation principale").get_by_role("link", name=name)


async def expect_nav(page: Page, *, settings: bool, enrol: bool) -> None:
    for name, shown in (
        ("Paramètres imagerie des RCP", settings),
        ("Réunion : experts d'astreinte", settings),
        ("Inscrire un patient", enrol),
    ):
        if shown:
            await expect(nav(page, name)).to_be_visible()
        else:
            await expect(nav(page, name)).to_be_hidden()
    await expect(nav(page, "Déroulement")).to_be_visible()


async def open_enrolment(page: Page, enrolment_id: str) -> None:
    await page.goto(f"/console/enrolments/{enrolment_id}")
    await expect(page.get_by_text("IRM CERVICALE FICTIVE")).to_be_visible()
    await expect(page.get_by_text("TDM THORAX FICTIF")).to_be_visible()


async def expect_shown(locator: Locator, shown: bool) -> None:
    if shown:
        await expect(locator).to_be_visible()
    else:
        await expect(locator).to_be_hidden()


async def expect_meeting_buttons(page: Page, meeting_id: str, enrolment_id: str, *, select: bool, enrol: bool) -> None:
    """The meeting day's page of the patient: the trash button of a selected study, and the refresh."""
    await page.goto(f"/console/meetings/{meeting_id}/patients/{enrolment_id}")
    await expect(page.get_by_text("TDM THORAX FICTIF")).to_be_visible()
    await expect_shown(page.get_by_role("button", name=re.compile("^Retirer l'examen")).first, select)
    await expect_shown(page.locator("#btn-refresh"), enrol)


async def expect_enrolment_buttons(page: Page, *, select: bool, enrol: bool, audit: bool) -> None:
    await expect_shown(page.get_by_role("button", name="Valider"), select)
    await expect_shown(page.get_by_role("button", name="Annuler l'inscription"), enrol)
    await expect_shown(page.get_by_role("button", name="Enregistrer l'identité"), enrol)
    await expect_shown(page.locator("#btn-refresh"), enrol)
    await expect_shown(page.get_by_role("heading", name="Journal de l'inscription"), audit)
    # What the role cannot save, it cannot edit either: the studies' boxes, the identity's fields.
    box = page.locator("#selection-form input[type=checkbox][data-editable-by='select']").first
    await (expect(box).to_be_enabled() if select else expect(box).to_be_disabled())
    if not enrol:
        await expect(page.locator("#patient-birth_name")).to_be_disabled()  # through its fieldset


async def test_each_role_signs_in_at_the_provider_and_sees_what_it_may_use(
    gateway: Gateway, browser: Browser, tmp_path: Path
) -> None:
    shots = Shots(tmp_path)
    meeting_id, enrolment_id = await seed(gateway)

    # A doctor: reads, selects and asks for expertise; no settings, enrolment or audit.
    medecin, medecin_errors = await sign_in(browser, gateway, "medecin.fictif")
    await expect(medecin.locator("#who")).to_have_text("Dr Paul FICTIF — Médecin")
    await expect_nav(medecin, settings=False, enrol=False)
    await expect(medecin.get_by_role("heading", name="Paramétrage (réservé aux 3C)")).to_be_hidden()
    await shots.take(medecin, "oidc-medecin-accueil", keep=True)
    await medecin.goto("/console/rcps/")
    await expect(medecin.get_by_label("Identifiant de la RCP")).to_be_visible()
    await expect(medecin.get_by_role("button", name="Enregistrer")).to_be_hidden()
    await open_enrolment(medecin, enrolment_id)
    await expect_enrolment_buttons(medecin, select=True, enrol=False, audit=False)
    await expect_meeting_buttons(medecin, meeting_id, enrolment_id, select=True, enrol=False)
    await open_enrolment(medecin, enrolment_id)
    await medecin.get_by_label("Sélectionner l'examen IRM CERVICALE FICTIVE").check()
    await medecin.get_by_label("Demande d'expertise").check()
    await medecin.get_by_role("button", name="Valider").click()

    async def both_selected() -> bool:
        answer = await gateway.api("GET", f"/api/v1/enrolments/{enrolment_id}")
        found = answer.json()
        return selected(found) == {CT, MR} and found["expertise"]["requested"] is True

    await eventually(both_selected, 30, "the doctor's selection of both studies, with expertise")
    await shots.take(medecin, "oidc-medecin-fiche", keep=True)
    assert medecin_errors == []

    # Read only (after a wrong password at the provider): no command button anywhere; then signs out.
    lecture, lecture_errors = await sign_in(browser, gateway, "lecture.fictif", wrong_password_first=True)
    await expect(lecture.locator("#who")).to_have_text("Léa LECTURE-FICTIVE — Lecture seule")
    await expect_nav(lecture, settings=False, enrol=False)
    await open_enrolment(lecture, enrolment_id)
    await expect_meeting_buttons(lecture, meeting_id, enrolment_id, select=False, enrol=False)
    await open_enrolment(lecture, enrolment_id)
    await expect_enrolment_buttons(lecture, select=False, enrol=False, audit=False)
    # The filters and the date fields' calendars only read; nothing else may be offered.
    visible_buttons = await lecture.locator("main button:visible:not(.calendar-toggle)").all_inner_texts()
    assert [text for text in visible_buttons if text.strip() not in {"Filtres"}] == [], visible_buttons
    await shots.take(lecture, "oidc-lecture-fiche", keep=True)
    refused = await lecture.request.put(
        f"/api/v1/enrolments/{enrolment_id}/selection",
        data=json.dumps({"study_instance_uids": [CT], "expertise_requested": False}),
        headers={"Content-Type": "application/json", "Origin": gateway.url},  # same site: the role decides
    )
    assert refused.status == 403
    assert "'select'" in (await refused.json())["detail"]
    await lecture.get_by_role("button", name="Se déconnecter").click()
    await expect(lecture.get_by_role("heading", name=re.compile("Vous déconnecter du fournisseur"))).to_be_visible()
    await lecture.get_by_role("button", name="Me déconnecter").click()
    await expect(lecture).to_have_url(re.compile(rf"^{re.escape(gateway.url)}/console/login"))
    assert COOKIE_NAME not in {cookie["name"] for cookie in await lecture.context.cookies()}
    assert (await lecture.request.get("/api/v1/me")).status == 401
    assert lecture_errors == []

    # The 3C: everything, and the audit names the doctor who selected.
    tc, tc_errors = await sign_in(browser, gateway, "3c.fictif")
    await expect(tc.locator("#who")).to_have_text("Claire FICTIVE (3C) — 3C")
    await expect_nav(tc, settings=True, enrol=True)
    await expect(tc.get_by_role("heading", name="Paramétrage (réservé aux 3C)")).to_be_visible()
    await shots.take(tc, "oidc-3c-accueil", keep=True)
    await open_enrolment(tc, enrolment_id)
    await expect_meeting_buttons(tc, meeting_id, enrolment_id, select=True, enrol=True)
    await open_enrolment(tc, enrolment_id)
    await expect_enrolment_buttons(tc, select=True, enrol=True, audit=True)
    await tc.get_by_role("button", name="Afficher le journal").click()
    doctor_row = tc.locator("#audit-table tbody tr", has_text="Sélection des examens").filter(
        has_text="Dr Paul FICTIF (medecin.fictif)"
    )
    await expect(doctor_row).to_have_count(1)
    await expect(doctor_row).to_contain_text("Médecin")
    await expect(doctor_row).to_contain_text("Fait")
    await expect(tc.locator("#audit-table tbody tr", has_text="Léa LECTURE-FICTIVE").first).to_be_visible()
    lecture_refused = tc.locator("#audit-table tbody tr", has_text="Sélection refusée (rôle sans ce droit)")
    await expect(lecture_refused).to_contain_text("Léa LECTURE-FICTIVE (lecture.fictif)")
    await expect(lecture_refused).to_contain_text("Refusé")
    await shots.take(tc, "oidc-3c-fiche-et-journal", keep=True)
    assert tc_errors == []


async def test_a_forged_or_replayed_callback_signs_nobody_in(gateway: Gateway) -> None:
    """The callback without the transaction cookie, or with another state, ends on the login page, no session."""
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        start = await client.get("/console/oidc/start", params={"next": "/console/meetings/"})
        assert start.status_code == 303
        assert "code_challenge_method=S256" in start.headers["location"]
        assert "proxymage_oidc=" in start.headers["set-cookie"]
        assert "SameSite=lax" in start.headers["set-cookie"]
        forged = await client.get("/console/oidc/callback", params={"code": "volé", "state": "autre"})
        assert forged.status_code == 303
        assert forged.headers["location"] == "/console/login?sign_in=expired"
        assert COOKIE_NAME not in forged.headers.get("set-cookie", "")
    async with httpx.AsyncClient(base_url=gateway.url) as stranger:
        answer = await stranger.get("/console/oidc/callback", params={"code": "x", "state": "y"})
        assert answer.headers["location"] == "/console/login?sign_in=expired"
        page = await stranger.get(answer.headers["location"])
        assert "La connexion a expiré ou a été interrompue : recommencez." in page.text
