"""The meeting day (issue 15 point 1) in Debian's Chromium: the meetings list (sort, centre, upcoming first), a
meeting's patients (birth date, sex, requesting doctor, imaging state; sort; previous/next), the printable
sheet (print layout turned into a PDF by the browser, its text read back) and the PDF export, and the home
page's meetings of the next 48 hours with studies not available.

The gateway runs in-process against the real Kafka and FerretDB (`harness.running_gateway`); the test plays the
DCC and the other services by publishing their events. Patients are invented (FICTIF). Screenshots are kept
under var/screenshots/ (`meeting-day-*.png`) for a reviewer.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pypdf
import pytest
from gateway.auth import COOKIE_NAME
from playwright.async_api import Browser, BrowserContext, Page, expect
from proxymage_dev.pytest_plugin import ROOT
from proxymage_shared import topics
from proxymage_shared.reasons import Reason

from .harness import DCC_TOKEN, RunningGateway, base, running_gateway

pytestmark = pytest.mark.integration

SCREENSHOTS = ROOT / "var" / "screenshots"
UI_TIMEOUT_MS = 20_000
TODAY = dt.datetime.now(ZoneInfo("Europe/Paris")).date()  # the gateway's and the browser's zone
NOT_IN_MIRC = Reason.of("not_in_mirc")
NOT_OWNED = Reason.of("not_patient_study")


def _shown(reason: Reason) -> str:
    """A reason as the sheet and the home page show it: after the state's sentence, a sentence of its own."""
    return reason.text[:1].upper() + reason.text[1:]


@pytest.fixture
async def gw(stack_env: dict[str, str], unique: str) -> AsyncIterator[RunningGateway]:
    async with running_gateway(unique) as running:
        yield running


async def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"meeting-day-{name}.png"), full_page=True)


async def _console(browser: Browser, gw: RunningGateway) -> tuple[BrowserContext, Page, list[str]]:
    """A browser signed in with the DCC's token cookie (what the login form sets), collecting script errors."""
    context = await browser.new_context(
        base_url=gw.url, locale="fr-FR", timezone_id="Europe/Paris", accept_downloads=True
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    await context.add_cookies(
        [{"name": COOKIE_NAME, "value": DCC_TOKEN, "url": gw.url, "httpOnly": True, "sameSite": "Strict"}]
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page, errors


@dataclass
class Study:
    description: str
    status: str  # the fetcher's last state
    reason: Reason | None = None
    uid: str = field(default_factory=lambda: f"2.25.{uuid.uuid4().int}")


@dataclass
class Patient:
    enrolment_id: str
    birth_name: str
    first_name: str
    sex: str
    birth_date: str
    requested_by: str
    studies: list[Study]

    @property
    def name(self) -> str:
        return f"{self.birth_name} {self.first_name}"


async def _meeting(gw: RunningGateway, meeting_id: str, title: str, date: dt.date, centre: str) -> None:
    event = base(
        meeting_id=meeting_id,
        rcp_id="rcp-essai",
        title=title,
        date=date.isoformat(),
        centre=centre,
        on_call_radiologist={"name": "Dr Jeanne ESSAI", "email": "jeanne.essai@chu-fictif.mssante.fr"},
        on_call_nuclear_physician=None,
    )
    await gw.send(topics.MEETING_EXPERTS, event, meeting_id)


async def _enrol(gw: RunningGateway, meeting_id: str, title: str, date: dt.date, centre: str, patient: Patient) -> None:
    """What the DCC and the services publish for one matched patient whose studies reached their state."""
    key = patient.enrolment_id
    pacs_patient = {"patient_id": f"P-{key}", "issuer": "CHU-FICTIF"}
    enrolled = base(
        enrolment_id=key,
        meeting_id=meeting_id,
        rcp_id="rcp-essai",
        meeting_title=title,
        meeting_date=date.isoformat(),
        centre=centre,
        patient={
            "birth_name": patient.birth_name,
            "used_name": None,
            "first_name": patient.first_name,
            "birth_date": patient.birth_date,
            "sex": patient.sex,
        },
        consent=True,
        requested_by={"name": patient.requested_by},
    )
    catalogued = [
        {
            "study_instance_uid": study.uid,
            "description": study.description,
            "pacs": "CHU FICTIF",
            "date": (TODAY - dt.timedelta(days=30 + index)).isoformat(),
            "modalities": ["CT"],
            "images": 10,
            "series": 1,
            "pacs_patient": pacs_patient,
        }
        for index, study in enumerate(patient.studies)
    ]
    await gw.send(topics.PATIENT_ENROLLED, enrolled, key)
    identity = base(
        enrolment_id=key, source_event_id=enrolled["event_id"], status="matched", pacs_patients=[pacs_patient]
    )
    await gw.send(topics.IDENTITY_RESOLVED, identity, key)
    await gw.send(topics.IMAGING_CATALOGUED, base(enrolment_id=key, status="listed", studies=catalogued), key)
    selection = [study.uid for study in patient.studies]
    await gw.send(
        topics.STUDIES_SELECTED, base(enrolment_id=key, study_instance_uids=selection, expertise_requested=False), key
    )
    for study in patient.studies:
        reason = {"reason": study.reason.text, "reason_code": study.reason.code} if study.reason else {}
        status = base(
            enrolment_id=key, study_instance_uid=study.uid, status=study.status, version=2, attempts=1, **reason
        )
        await gw.send(topics.STUDY_STATUS, status, key)

    def shown(answer: dict[str, Any]) -> bool:
        states = {item["study_instance_uid"]: item["retrieval"]["status"] for item in answer["studies"]}
        return all(states.get(study.uid) == study.status for study in patient.studies)

    await gw.wait_for(f"/api/v1/enrolments/{key}", shown)


async def _order(page: Page) -> list[str]:
    return [
        str(value)
        for value in await page.locator("#patients > li").evaluate_all(
            "items => items.map(item => item.dataset.enrolmentId)"
        )
    ]


def _pdf_text(document: bytes) -> str:
    """The document's text on one line; NFKC undoes the ligatures Chromium's fonts draw (ﬁ -> fi)."""
    reader = pypdf.PdfReader(io.BytesIO(document))
    text = unicodedata.normalize("NFKC", " ".join(page.extract_text() for page in reader.pages))
    return " ".join(text.split())


async def test_meeting_page_sort_previous_next_print_and_pdf(gw: RunningGateway, browser: Browser) -> None:
    meeting_id = f"m-jour-{uuid.uuid4().hex[:6]}"
    title, date, centre = "RCP ORL FICTIVE", TODAY + dt.timedelta(days=1), "3C FICTIF TOURS"
    zola = Patient(
        "enr-jour-1", "ZOLA-FICTIF", "Anne", "F", "1956-04-12", "Dr Bernard AUDIT",
        [Study("TDM THORAX FICTIF", "available"), Study("TEP FICTIVE", "available")],
    )  # fmt: skip
    echo = Patient(
        "enr-jour-2", "ÉCHO-FICTIF", "Hélène", "F", "1961-09-30", "Dr Zoé ZÉPHYR",
        [Study("IRM CERVICALE FICTIVE", "available"), Study("TDM SINUS FICTIF", "not_yet_available", NOT_IN_MIRC)],
    )  # fmt: skip
    martin = Patient(
        "enr-jour-3", "MARTIN-FICTIF", "Jean", "M", "1970-01-31", "Dr Claire CLERC",
        [Study("ÉCHOGRAPHIE CERVICALE FICTIVE", "failed", NOT_OWNED)],
    )  # fmt: skip
    patients = (zola, echo, martin)
    await _meeting(gw, meeting_id, title, date, centre)
    for patient in patients:
        await _enrol(gw, meeting_id, title, date, centre, patient)

    context, page, errors = await _console(browser, gw)
    await page.goto(f"/console/meetings/{meeting_id}")
    items = page.locator("#patients > li")
    await expect(items).to_have_count(3)
    first = items.filter(has_text="ZOLA-FICTIF Anne")
    await expect(first).to_contain_text("Née le 12/04/1956 · Féminin")
    await expect(first).to_contain_text("Demandeur : Dr Bernard AUDIT")
    await expect(first).to_contain_text("Tous les examens disponibles")
    await expect(items.filter(has_text="MARTIN-FICTIF Jean")).to_contain_text("Né le 31/01/1970 · Masculin")
    await expect(items.filter(has_text="MARTIN-FICTIF Jean")).to_contain_text("Récupération en échec")
    await expect(items.filter(has_text="ÉCHO-FICTIF Hélène")).to_contain_text("Examens pas encore tous disponibles")
    assert await _order(page) == ["enr-jour-1", "enr-jour-2", "enr-jour-3"]  # the order of enrolment

    sort = page.get_by_label("Trier par")
    await sort.select_option(label="Médecin demandeur")  # AUDIT, CLERC, ZÉPHYR (accents do not count)
    assert await _order(page) == ["enr-jour-1", "enr-jour-3", "enr-jour-2"]
    await sort.select_option(label="Nom du patient")  # ÉCHO, MARTIN, ZOLA
    assert await _order(page) == ["enr-jour-2", "enr-jour-3", "enr-jour-1"]
    await sort.select_option(label="État de l'imagerie")  # failed, waiting, available
    assert await _order(page) == ["enr-jour-3", "enr-jour-2", "enr-jour-1"]
    await expect(page).to_have_url(re.compile(r"\?tri=etat$"))
    await _shot(page, "reunion-tri-par-etat")

    # Previous/next follow the list's order, which the links carry along.
    await items.first.get_by_role("link").click()
    await expect(page).to_have_url(re.compile(rf"/patients/{martin.enrolment_id}\?tri=etat$"))
    steps = page.get_by_role("navigation", name="Patients de la réunion")
    await expect(steps).to_contain_text("Patient 1 sur 3")
    await expect(steps.get_by_role("link", name="← Patient précédent")).to_be_hidden()
    await steps.get_by_role("link", name="Patient suivant →").click()
    await expect(page).to_have_url(re.compile(rf"/patients/{echo.enrolment_id}\?tri=etat$"))
    await expect(page.locator("#patient-name")).to_have_text("ÉCHO-FICTIF Hélène")
    await expect(steps).to_contain_text("Patient 2 sur 3")
    await expect(page.get_by_label("Trier par")).to_have_value("etat")
    await _shot(page, "reunion-patient-precedent-suivant")
    await steps.get_by_role("link", name="Patient suivant →").click()
    await expect(page.locator("#patient-name")).to_have_text("ZOLA-FICTIF Anne")
    await expect(steps).to_contain_text("Patient 3 sur 3")
    await expect(steps.get_by_role("link", name="Patient suivant →")).to_be_hidden()
    await steps.get_by_role("link", name="← Patient précédent").click()
    await expect(page.locator("#patient-name")).to_have_text("ÉCHO-FICTIF Hélène")

    # The enrolment page too: previous/next in the meeting's order of enrolment.
    await page.get_by_role("link", name=re.compile("^Fiche d'inscription")).click()
    await expect(page).to_have_url(f"{gw.url}/console/enrolments/{echo.enrolment_id}")
    await expect(steps).to_contain_text("Patient 2 sur 3")
    await steps.get_by_role("link", name="Patient suivant →").click()
    await expect(page).to_have_url(f"{gw.url}/console/enrolments/{martin.enrolment_id}")
    await expect(steps).to_contain_text("Patient 3 sur 3")
    await expect(steps.get_by_role("link", name="Patient suivant →")).to_be_hidden()
    await expect(page.locator("#enrolment-meeting")).to_contain_text("MARTIN-FICTIF Jean")

    # The printable sheet: every patient, each selected study with its state; no navigation when printed.
    await page.goto(f"/console/meetings/{meeting_id}")
    await page.get_by_role("link", name="Imprimer la fiche").click()
    await expect(page).to_have_url(f"{gw.url}/console/meetings/{meeting_id}/fiche")
    sections = page.locator(".sheet-patient")
    await expect(sections).to_have_count(3)
    await expect(page.locator("#sheet-title")).to_have_text(f"{title} du {date.strftime('%d/%m/%Y')}")
    await expect(sections.first).to_contain_text("ÉCHO-FICTIF Hélène")  # alphabetical, accents folded
    await expect(sections.filter(has_text="ÉCHO-FICTIF")).to_contain_text(_shown(NOT_IN_MIRC))
    await _shot(page, "fiche-ecran")
    await page.emulate_media(media="print")
    await expect(page.locator(".banner")).to_be_hidden()
    await expect(page.get_by_role("button", name="Imprimer")).to_be_hidden()
    await _shot(page, "fiche-impression")
    printed = _pdf_text(await page.pdf(format="A4", print_background=True))
    for patient in patients:
        assert patient.name in printed
        for study in patient.studies:
            assert study.description in printed
    assert "Née le 30/09/1961 · Féminin — Médecin demandeur : Dr Zoé ZÉPHYR" in printed
    assert _shown(NOT_IN_MIRC) in printed
    assert _shown(NOT_OWNED) in printed
    assert printed.count("Visuel disponible") == 3
    for navigation in ("Paramètres imagerie des RCP", "Se déconnecter", "Exporter en PDF", "Retour au déroulement"):
        assert navigation not in printed
    await page.emulate_media(media="screen")

    # The PDF export, downloaded through the page's link (the console's cookie is the credential).
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Exporter en PDF").click()
    download = await download_info.value
    assert download.suggested_filename == f"fiche-{meeting_id}.pdf"
    exported_path = await download.path()
    exported = _pdf_text(exported_path.read_bytes())
    assert f"{title} du {date.strftime('%d/%m/%Y')}" in exported
    for patient in patients:
        assert patient.name in exported
    assert "Née le 30/09/1961 — Sexe : Féminin — Médecin demandeur : Dr Zoé ZÉPHYR" in exported
    assert "Radiologue d'astreinte : Dr Jeanne ESSAI" in exported
    # Without the cookie, no sheet.
    anonymous = await browser.new_context(base_url=gw.url)
    assert (await anonymous.request.get(f"/api/v1/meetings/{meeting_id}/sheet.pdf")).status == 401
    await anonymous.close()
    assert errors == []
    await context.close()


async def test_meetings_list_and_the_home_page_48_hours_block(gw: RunningGateway, browser: Browser) -> None:
    tours, orleans = "3C FICTIF TOURS", "3C FICTIF ORLÉANS"
    soon = (f"m-soon-{uuid.uuid4().hex[:6]}", "RCP ORL FICTIVE", TODAY + dt.timedelta(days=1), tours)
    today = (f"m-today-{uuid.uuid4().hex[:6]}", "RCP AAA FICTIVE", TODAY, orleans)
    later = (f"m-later-{uuid.uuid4().hex[:6]}", "RCP DIGESTIVE FICTIVE", TODAY + dt.timedelta(days=5), orleans)
    past = (f"m-past-{uuid.uuid4().hex[:6]}", "RCP ANCIENNE FICTIVE", TODAY - dt.timedelta(days=10), tours)
    for meeting in (soon, today, later, past):
        await _meeting(gw, *meeting)
    waiting = Patient(
        "enr-48h-1", "ESSAI-FICTIF", "Léa", "F", "1980-02-29", "Dr Paul DEMANDEUR",
        [Study("IRM FICTIVE", "not_yet_available", NOT_IN_MIRC), Study("TDM FICTIF", "available")],
    )  # fmt: skip
    ready = Patient(
        "enr-48h-2", "PRET-FICTIF", "Marc", "M", "1975-05-05", "Dr Paul DEMANDEUR", [Study("TEP", "available")]
    )
    far = Patient(
        "enr-48h-3", "LOIN-FICTIF", "Nina", "F", "1990-10-10", "Dr Paul DEMANDEUR",
        [Study("TDM LOINTAIN", "queued")],
    )  # fmt: skip
    await _enrol(gw, *soon, waiting)
    await _enrol(gw, *today, ready)
    await _enrol(gw, *later, far)

    context, page, errors = await _console(browser, gw)
    await page.goto("/console/meetings/")
    upcoming = page.locator("#meetings-upcoming tbody tr")
    await expect(upcoming).to_have_count(3)

    async def meetings(rows: Any) -> list[str]:
        return [str(value) for value in await rows.evaluate_all("rows => rows.map(row => row.dataset.meetingId)")]

    assert await meetings(upcoming) == [today[0], soon[0], later[0]]  # soonest first
    await expect(upcoming.first).to_contain_text(TODAY.strftime("%d/%m/%Y"))
    past_rows = page.locator("#meetings-past tbody tr")
    await expect(past_rows.first).to_be_hidden()  # folded away until asked for
    await page.get_by_text("Réunions passées").click()
    await expect(past_rows).to_have_count(1)
    await expect(past_rows.first).to_contain_text("RCP ANCIENNE FICTIVE")
    await page.get_by_label("Trier par").select_option(label="Intitulé")
    assert await meetings(upcoming) == [today[0], later[0], soon[0]]
    await page.get_by_label("Centre").select_option(label=tours)
    assert await meetings(upcoming) == [soon[0]]
    assert await meetings(past_rows) == [past[0]]
    await expect(page).to_have_url(re.compile(r"\?tri=title&centre="))
    await _shot(page, "reunions-tri-filtre")

    # Home: the meetings of the next 48 hours with selected studies not available, with the reason.
    await page.goto("/console/")
    block = page.locator("#gaps-list")
    await expect(block.locator(":scope > li")).to_have_count(1)
    item = block.locator(":scope > li").first
    await expect(item).to_contain_text(f"RCP ORL FICTIVE du {soon[2].strftime('%d/%m/%Y')}")
    await expect(item).to_contain_text("ESSAI-FICTIF Léa")
    await expect(item).to_contain_text("IRM FICTIVE")
    await expect(item).to_contain_text(_shown(NOT_IN_MIRC))
    await expect(item).not_to_contain_text("TDM FICTIF")  # available: not a gap
    await expect(page.locator("main")).not_to_contain_text("LOIN-FICTIF")  # in 5 days: outside the 48 hours
    await expect(page.locator("main")).not_to_contain_text("PRET-FICTIF")  # everything available
    await _shot(page, "accueil-48-heures")
    await item.get_by_role("link", name="ESSAI-FICTIF Léa").click()
    await expect(page).to_have_url(f"{gw.url}/console/meetings/{soon[0]}/patients/{waiting.enrolment_id}")
    assert errors == []
    await context.close()
