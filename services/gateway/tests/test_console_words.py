"""The console's words, dates, pick lists and experts (issue 15, points 2, 4 and 5).

- Plain HTTP, no servers: the guide's modality labels word for word, "Actualiser", no section references
  and no `type=date` field on any page, the help page and the configurable contact link.
- In a browser whose language is en-US (Chromium via Playwright, the gateway in-process on the real Kafka
  and FerretDB, as in test_console.py): dates typed and shown JJ/MM/AAAA and sent as ISO; the RCP, meeting
  and expert pick lists fill the fields; a `@gmail.com` expert address is refused at entry, next to the field.

Screenshots go under the test's tmp_path; the key ones are also copied to var/screenshots/.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gateway.console import COOKIE_NAME, ConsoleOptions, mount
from gateway.console.dates import fr_date
from gateway.console.labels import IDENTITY_STATUS_DETAILS, MODALITY_LABELS, script_labels
from playwright.async_api import Browser, BrowserContext, Page, expect
from proxymage_dev.testing import eventually
from proxymage_shared import topics
from proxymage_shared.events import MODALITIES

from . import test_console as console_tests
from .test_console import TOKEN, UI_TIMEOUT_MS, Gateway, Shots

gateway = console_tests.gateway  # the in-process gateway fixture of test_console.py

# User guide §4.1, "Vous pouvez filtrer selon le type d'examen", one line per type as the guide prints it
# (its OCR'd bullets and irregular spacing around the colon dropped).
GUIDE_MODALITY_LINES = """
AU: Audio
CR: Radiographie conventionnelle (informatisée)
CT: Tomodensitométrie
DX: Radiologie numérique
ES: Endoscopie
MG: Mammographie
MR: Résonance magnétique
NM: Médecine nucléaire
OT: Autre
PT: Tomographie par émission de positons Type (PET)
RF: Radiofluoroscopie
RT: Radiothérapie
SC: Capture d'écran par image clé
SR: Rapports structurés
US: Ultrasons
VL: Photo
XA: Angiographie
XC: Radioscopie numérique
"""
GUIDE_MODALITIES = dict(line.split(": ", 1) for line in GUIDE_MODALITY_LINES.strip().splitlines())
PAGES = (
    "/console/",
    "/console/aide",
    "/console/login",
    "/console/rcps/",
    "/console/rcps/rcp-essai",
    "/console/meetings/",
    "/console/meetings/new",
    "/console/meetings/m-essai/details",
    "/console/meetings/m-essai",
    "/console/meetings/m-essai/patients/enr-essai",
    "/console/enrolments/new",
    "/console/enrolments/enr-essai",
)
CONTACT = "mailto:3c@3c-fictif.mssante.test"
MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)

# --------------------------------------------------------------------------------------------------------
# Plain HTTP


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test")


async def _page(url: str, options: ConsoleOptions | None = None) -> str:
    app = FastAPI()
    mount(app, options)
    async with _client(app) as client:
        answer = await client.get(url)
    assert answer.status_code == 200, url
    return answer.text


def test_the_modality_labels_are_the_guides_word_for_word() -> None:
    assert MODALITY_LABELS == GUIDE_MODALITIES
    assert tuple(MODALITY_LABELS) == MODALITIES  # the guide's order is the contract's


def test_the_script_says_actualiser_and_knows_the_mssante_error() -> None:
    assert "« Actualiser »" in IDENTITY_STATUS_DETAILS["error"]
    labels = script_labels()
    errors = labels["errors"]
    assert isinstance(errors, dict)
    assert errors["mssante_domain"] == "adresse hors messagerie sécurisée de santé (MSSanté)"
    assert "Rafraîchir" not in repr(labels)


@pytest.mark.parametrize(
    ("iso", "shown"),
    [("2023-03-22", "22/03/2023"), ("1956-04-12", "12/04/1956"), ("", ""), ("22/03/2023", "22/03/2023")],
)
def test_dates_are_shown_jj_mm_aaaa(iso: str, shown: str) -> None:
    assert fr_date(iso) == shown


@pytest.mark.parametrize("url", PAGES)
async def test_no_page_uses_a_browser_date_field_old_words_or_section_references(url: str) -> None:
    page = await _page(url)
    text = html.unescape(page)
    assert 'type="date"' not in page
    assert "Rafraîchir" not in text
    assert re.search(r"\(§|§\s*\d", text) is None
    assert '<a href="/console/aide"' in page  # the footer's help link, on every page


async def test_date_fields_say_their_format_and_show_a_prefilled_date_the_french_way() -> None:
    page = await _page("/console/enrolments/new?meeting_id=m-essai&meeting_date=2030-01-02")
    field = re.search(r'<input type="text" id="meeting_date"[^>]*>', page)
    assert field is not None
    assert 'value="02/01/2030"' in field.group()
    assert 'placeholder="JJ/MM/AAAA"' in field.group()
    assert re.search(r'<input type="text" id="birth_date"[^>]*data-max="\d{4}-\d{2}-\d{2}"', page)
    for filter_field in ("f-date-from", "f-date-to"):
        assert f'<input type="text" id="{filter_field}" name="date_' in page


async def test_ids_are_offered_from_pick_lists() -> None:
    for url, fields in {
        "/console/": ["home-meeting-id"],
        "/console/meetings/": ["meeting-id"],
        "/console/rcps/": ["rcp_id"],
        "/console/meetings/new": ["meeting_id", "rcp_id", "radiologist-name", "radiologist-email"],
        "/console/enrolments/new": ["meeting_id", "rcp_id"],
    }.items():
        page = await _page(url)
        for field in fields:
            assert re.search(rf'<input [^>]*id="{field}"[^>]*data-pick="', page), (url, field)


async def test_the_help_page_sums_up_the_guide_and_the_footer_links_the_contact() -> None:
    options = ConsoleOptions(contact=CONTACT, expert_domains=("*.mssante.fr", "*.mssante.test"))
    page = await _page("/console/aide", options)
    text = html.unescape(page)
    for words in (
        "Rapprochement des identités",
        "nom de naissance, nom d'usage (si renseigné)",
        "Chrome 109+",
        "réservés aux 3C",
        "CT</abbr> : Tomodensitométrie",
        "Demande d'expertise",
        "« Actualiser »",
        "Visuel disponible",
        "*.mssante.fr, *.mssante.test",
        "JJ/MM/AAAA",
    ):
        assert words in text, words
    assert f'<a id="contact-link" href="{CONTACT}">Contact</a>' in page
    assert f'<a href="{CONTACT}">contactez-nous</a>' in page
    without = html.unescape(await _page("/console/aide"))
    assert 'id="contact-link"' not in without
    assert "contactez la 3C de votre établissement" in without
    experts = html.unescape(await _page("/console/meetings/new", options))
    assert "Adresse de messagerie sécurisée de santé (MSSanté) : *.mssante.fr, *.mssante.test" in experts
    assert '"expert_domains": ["*.mssante.fr", "*.mssante.test"]' in experts


# --------------------------------------------------------------------------------------------------------
# In an en-US browser


async def open_en_us(browser: Browser, gateway: Gateway) -> tuple[BrowserContext, Page, list[str]]:
    """A browser speaking American English, signed in with the test's token (the login's cookie)."""
    context = await browser.new_context(base_url=gateway.url, locale="en-US", timezone_id="America/New_York")
    context.set_default_timeout(UI_TIMEOUT_MS)
    await context.add_cookies(
        [{"name": COOKIE_NAME, "value": TOKEN, "url": gateway.url, "httpOnly": True, "sameSite": "Strict"}]
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page, errors


async def known(gateway: Gateway, path: str, check: Any) -> None:
    async def holds() -> bool:
        answer = await gateway.api("GET", path)
        return answer.status_code == 200 and bool(check(answer.json()))

    await eventually(holds, 30, f"{path} to list what the test published")


def _fr(day: dt.date) -> str:
    return day.strftime("%d/%m/%Y")


async def test_dates_are_typed_and_shown_jj_mm_aaaa_in_an_en_us_browser(
    gateway: Gateway, browser: Browser, tmp_path: Path
) -> None:
    shots = Shots(tmp_path)
    context, page, errors = await open_en_us(browser, gateway)
    meeting_id = f"m-dates-{uuid.uuid4().hex[:6]}"
    rcp_id = f"rcp-dates-{uuid.uuid4().hex[:6]}"
    meeting_day = dt.date.today() + dt.timedelta(days=9)

    await page.goto("/console/meetings/new")
    assert await page.evaluate("navigator.language") == "en-US"
    await expect(page.locator("input[type=date]")).to_have_count(0)
    date = page.get_by_label("Date", exact=True)
    await expect(date).to_have_attribute("placeholder", "JJ/MM/AAAA")
    await page.get_by_label("Identifiant de la réunion").fill(meeting_id)
    await page.get_by_label("Identifiant de la RCP").fill(rcp_id)
    await page.get_by_label("Intitulé de la RCP").fill("RCP DATES FICTIVE")
    await page.get_by_label("Centre").fill("3C FICTIF")
    # The calendar: French months, weeks from Monday; a chosen day is written JJ/MM/AAAA.
    calendar = page.get_by_role("dialog", name="Calendrier")
    await page.get_by_role("button", name="Ouvrir le calendrier").click()
    await expect(calendar).to_be_visible()
    this_month = dt.date.today().replace(day=1)
    next_month = (this_month + dt.timedelta(days=32)).replace(day=1)
    await expect(calendar.locator(".calendar-title")).to_have_text(f"{MONTHS[this_month.month - 1]} {this_month.year}")
    await expect(calendar.locator("th")).to_have_text(["lu", "ma", "me", "je", "ve", "sa", "di"])
    await calendar.get_by_role("button", name="Mois suivant").click()
    await expect(calendar.locator(".calendar-title")).to_have_text(f"{MONTHS[next_month.month - 1]} {next_month.year}")
    await shots.take(page, "calendrier", keep=True)
    await calendar.get_by_role("button", name=f"15 {MONTHS[next_month.month - 1]} {next_month.year}").click()
    await expect(calendar).to_be_hidden()
    await expect(date).to_have_value(_fr(next_month.replace(day=15)))
    # The American way, then an impossible day: each is refused with a French message beside the field.
    await date.fill(meeting_day.strftime("%m/%d/%Y") if meeting_day.day > 12 else "02/30/2027")
    await date.blur()
    message = page.locator("#date-error")
    await expect(message).to_have_text("Date invalide : saisir JJ/MM/AAAA, par exemple 22/03/2023.")
    await expect(date).to_have_attribute("aria-invalid", "true")
    await date.fill("31/02/2027")
    await date.blur()
    await expect(message).to_be_visible()
    await shots.take(page, "date-refusee-en-us", keep=True)
    await page.get_by_role("button", name="OK", exact=True).click()
    assert await date.evaluate("input => input.validationMessage") == (
        "Date invalide : saisir JJ/MM/AAAA, par exemple 22/03/2023."
    )
    await date.fill(meeting_day.strftime("%-d/%-m/%Y"))  # short forms are accepted and written out in full
    await date.blur()
    await expect(date).to_have_value(_fr(meeting_day))
    await expect(message).to_be_hidden()
    await page.get_by_role("button", name="OK", exact=True).click()
    await expect(page.locator("#form-status")).to_contain_text(f"pour la réunion du {_fr(meeting_day)}")
    published = await gateway.command(topics.MEETING_EXPERTS, meeting_id=meeting_id)
    assert published["date"] == meeting_day.isoformat()  # the first one: the refused dates sent nothing

    # Shown dates: the meetings list, and a date prefilled from a link.
    await known(gateway, "/api/v1/meetings", lambda meetings: any(m["meeting_id"] == meeting_id for m in meetings))
    await page.goto("/console/meetings/")
    listed = page.get_by_role("link", name=f"RCP DATES FICTIVE du {_fr(meeting_day)}", exact=True)
    await expect(listed).to_be_visible()
    row = page.locator(f'tr[data-meeting-id="{meeting_id}"]')
    await expect(row.locator("td").first).to_have_text(_fr(meeting_day))
    await page.goto(
        f"/console/enrolments/new?meeting_id={meeting_id}&rcp_id={rcp_id}&meeting_title=RCP%20DATES%20FICTIVE"
        f"&meeting_date={meeting_day.isoformat()}&centre=3C%20FICTIF"
    )
    await expect(page.get_by_label("Date de la RCP")).to_have_value(_fr(meeting_day))
    enrolment_id = await page.get_by_label("Identifiant de l'inscription").input_value()
    await page.get_by_label("Nom de naissance").fill("DATES-FICTIF")
    await page.get_by_label("Prénom").fill("Jeanne")
    await page.get_by_label("Sexe").select_option("F")
    birth = page.get_by_label("Date de naissance")
    await birth.fill(_fr(dt.date.today() + dt.timedelta(days=1)))
    await birth.blur()
    await expect(page.locator("#birth_date-error")).to_contain_text("ne peut pas être postérieure au")
    await birth.fill("12/04/1956")
    await birth.blur()
    await page.get_by_label("Médecin demandeur").fill("Dr Paul DEMANDEUR")
    await page.get_by_label("Le patient a été informé").check()
    enrolled = await gateway.command(topics.PATIENT_ENROLLED, enrolment_id=enrolment_id)
    assert enrolled["patient"]["birth_date"] == "1956-04-12"
    assert enrolled["meeting_date"] == meeting_day.isoformat()

    # The Imaging tab's "Filtres": a date range typed JJ/MM/AAAA, summarised JJ/MM/AAAA.
    await page.get_by_role("button", name="Filtres", exact=True).click()
    await page.locator("#f-date-between").check()
    await page.locator("#f-date-from").fill("01/01/2020")
    await page.locator("#f-date-to").fill("31/12/2020")
    await shots.take(page, "filtre-dates-en-us", keep=True)
    await page.get_by_role("button", name="OK", exact=True).click()
    await expect(page.locator("#filters-summary")).to_contain_text("examens du 01/01/2020 au 31/12/2020")

    # The enrolment page shows the birth date the French way.
    await page.goto(f"/console/enrolments/{enrolment_id}")
    await expect(page.locator("#identity-form").get_by_label("Date de naissance")).to_have_value("12/04/1956")
    await shots.take(page, "fiche-dates-en-us", keep=True)

    # The help page, from every page's footer.
    await page.get_by_role("link", name="Aide", exact=True).click()
    await expect(page.get_by_role("heading", name="Rapprochement des identités")).to_be_visible()
    await shots.take(page, "aide", keep=True)
    await context.close()
    assert errors == []


async def test_pick_lists_fill_the_ids_and_experts_are_checked_at_entry(
    gateway: Gateway, browser: Browser, tmp_path: Path
) -> None:
    shots = Shots(tmp_path)
    suffix = uuid.uuid4().hex[:6]
    rcp_id, meeting_id, new_meeting_id = f"rcp-pick-{suffix}", f"m-pick-{suffix}", f"m-pick-new-{suffix}"
    day = dt.date.today() + dt.timedelta(days=14)
    radiologist = {"name": f"Dr Jeanne CHOIX-{suffix}", "email": f"jeanne.choix.{suffix}@chu-fictif.mssante.fr"}
    nuclear = {"name": f"Dr Paul LISTE-{suffix}", "email": f"paul.liste.{suffix}@chu-fictif.mssante.fr"}
    settings = {
        "title": f"RCP PICK FICTIVE {suffix}",
        "centre": "3C PICK FICTIF",
        "imaging": {"modalities": ["CT", "MR"], "date_filter": {"kind": "within_months", "months": 24}},
    }
    assert (await gateway.api("PUT", f"/api/v1/rcps/{rcp_id}/imaging-settings", settings)).status_code == 202
    meeting = {
        "rcp_id": rcp_id,
        "title": f"RCP PICK FICTIVE {suffix}",
        "date": day.isoformat(),
        "centre": "3C PICK FICTIF",
        "on_call_radiologist": radiologist,
        "on_call_nuclear_physician": nuclear,
    }
    assert (await gateway.api("PUT", f"/api/v1/meetings/{meeting_id}/experts", meeting)).status_code == 202
    await known(gateway, "/api/v1/rcps", lambda rcps: any(r["rcp_id"] == rcp_id for r in rcps))
    await known(
        gateway,
        "/api/v1/experts",
        lambda experts: (
            radiologist | {"roles": ["radiologist"]}
            in [{key: e[key] for key in ("name", "email", "roles")} for e in experts]
        ),
    )
    context, page, errors = await open_en_us(browser, gateway)

    # The RCP settings: picking the RCP loads its title, centre and filters.
    await page.goto("/console/rcps/")
    option = page.locator(f'#pick-rcp option[value="{rcp_id}"]')
    await expect(option).to_have_attribute("label", f"RCP PICK FICTIVE {suffix} — 3C PICK FICTIF")
    await page.get_by_label("Identifiant de la RCP").fill(rcp_id)
    await expect(page.get_by_label("Intitulé de la RCP")).to_have_value(f"RCP PICK FICTIVE {suffix}")
    await expect(page.get_by_label("Centre")).to_have_value("3C PICK FICTIF")
    await expect(page.locator("#rcp-modality-CT")).to_be_checked()
    await expect(page.locator("#rcp-months")).to_have_value("24")
    await shots.take(page, "liste-rcp", keep=True)

    # A new enrolment: picking the meeting fills its RCP, title, date and centre.
    await page.goto("/console/enrolments/new")
    option = page.locator(f'#pick-meeting option[value="{meeting_id}"]')
    await expect(option).to_have_attribute("label", f"RCP PICK FICTIVE {suffix} du {_fr(day)} — 3C PICK FICTIF")
    await page.get_by_label("Identifiant de la réunion").fill(meeting_id)
    await expect(page.get_by_label("Identifiant de la RCP")).to_have_value(rcp_id)
    await expect(page.get_by_label("Intitulé de la RCP")).to_have_value(f"RCP PICK FICTIVE {suffix}")
    await expect(page.get_by_label("Date de la RCP")).to_have_value(_fr(day))
    await expect(page.get_by_label("Centre")).to_have_value("3C PICK FICTIF")
    await shots.take(page, "liste-reunion-inscription", keep=True)

    # A new meeting (a new id is accepted), its RCP picked, its experts reused from the previous meeting.
    await page.goto("/console/meetings/new")
    await page.get_by_label("Identifiant de la réunion").fill(new_meeting_id)
    await page.get_by_label("Identifiant de la RCP").fill(rcp_id)
    await expect(page.get_by_label("Intitulé de la RCP")).to_have_value(f"RCP PICK FICTIVE {suffix}")
    await expect(page.get_by_label("Centre")).to_have_value("3C PICK FICTIF")
    await page.get_by_label("Date", exact=True).fill(_fr(day + dt.timedelta(days=7)))
    radiologist_box = page.locator("fieldset", has_text="Radiologue d'astreinte")
    nuclear_box = page.locator("fieldset", has_text="Médecin nucléaire d'astreinte")
    await expect(page.locator(f'#pick-expert-name option[value="{radiologist["name"]}"]')).to_have_attribute(
        "label", radiologist["email"]
    )
    await radiologist_box.get_by_label("Nom").fill(radiologist["name"])
    await expect(radiologist_box.get_by_label("Adresse de messagerie sécurisée")).to_have_value(radiologist["email"])
    await nuclear_box.get_by_label("Adresse de messagerie sécurisée").fill(nuclear["email"])
    await expect(nuclear_box.get_by_label("Nom")).to_have_value(nuclear["name"])

    # A @gmail.com address is refused at entry, in French, beside the field; nothing is sent.
    email = radiologist_box.get_by_label("Adresse de messagerie sécurisée")
    await email.fill("jeanne.choix@gmail.com")
    await email.blur()
    refusal = page.locator("#radiologist-email-error")
    await expect(refusal).to_contain_text(
        "Adresse refusée : ce n'est pas une adresse de messagerie sécurisée de santé (MSSanté). Domaines admis : "
    )
    await expect(refusal).to_contain_text("*.mssante.fr")
    await shots.take(page, "expert-adresse-refusee", keep=True)
    await page.get_by_role("button", name="OK", exact=True).click()
    await expect(page.locator("#form-status")).not_to_contain_text("enregistrés")
    await email.fill(radiologist["email"])
    await email.blur()
    await expect(refusal).to_be_hidden()
    await page.get_by_role("button", name="OK", exact=True).click()
    await expect(page.locator("#form-status")).to_contain_text("Experts d'astreinte enregistrés")
    published = await gateway.command(topics.MEETING_EXPERTS, meeting_id=new_meeting_id)
    assert published["on_call_radiologist"] == radiologist  # the first one: the refused address sent nothing
    assert published["on_call_nuclear_physician"] == nuclear
    assert published["rcp_id"] == rcp_id
    await shots.take(page, "experts-repris", keep=True)

    # The same address sent by another client is refused by the gateway itself.
    refused = await gateway.api(
        "PUT",
        f"/api/v1/meetings/{new_meeting_id}/experts",
        meeting | {"on_call_radiologist": {"name": "Dr Jeanne CHOIX", "email": "jeanne.choix@gmail.com"}},
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["msg"].startswith("Adresse refusée : ce n'est pas une adresse de messagerie")

    # The Déroulement's meeting field offers the known meetings too.
    await page.goto("/console/meetings/")
    await expect(page.locator(f'#pick-meeting option[value="{meeting_id}"]')).to_have_count(1)
    await context.close()
    assert errors == []
