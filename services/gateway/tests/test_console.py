"""The operator console (issue 6, point 7).

- Plain HTTP, no servers: every page renders in French, user data arrives escaped, the login cookie is
  HttpOnly/SameSite=Strict, redirects stay on the console, and every near miss has a French hint.
- In a browser (Playwright for Python driving Debian's Chromium; no browser download): the gateway runs
  in-process against the real Kafka and FerretDB of deploy/local, and the test plays the other services by
  publishing their outcome events on its own prefixed topics, while it goes through the console as a 3C
  user would: log in, set an RCP's filters, set a meeting's experts, enrol a patient with consent, select two
  studies with expertise, watch them turn "Visuel disponible", check the viewer link, remove one. Then
  (CONTRACT v1.1) correct an identity on the enrolment page and cancel the enrolment through its
  confirmation dialog, and cancel a new enrolment already sent.

Screenshots go under the test's tmp_path; the key ones are also copied to var/screenshots/.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from gateway.api_models import IdentityView, RetrievalView
from gateway.console import COOKIE_NAME, mount
from gateway.console.labels import (
    IDENTITY_STATUS_LABELS,
    MODALITY_LABELS,
    NEAR_MISS_KINDS,
    NEAR_MISS_TRAITS,
    NOTIFICATION_STATUS_LABELS,
    RETRIEVAL_STATUS_LABELS,
    near_miss_hint,
    script_labels,
)
from gateway.settings import Settings
from playwright.async_api import Browser, Dialog, Page, expect
from proxymage_dev.pytest_plugin import ROOT, free_port
from proxymage_dev.testing import consuming, eventually, stop_in_order
from proxymage_shared import topics
from proxymage_shared.events import (
    MODALITIES,
    CataloguedStudy,
    Event,
    ExpertiseNotification,
    IdentityResolved,
    ImagingCatalogued,
    NearMiss,
    NotificationStatus,
    PacsPatientRef,
    Progress,
    StudyStatusChanged,
)
from proxymage_shared.reasons import TEXTS, Reason
from proxymage_shared.settings import load_settings

from .harness import serving_with_log

SCREENSHOTS = ROOT / "var" / "screenshots"
TOKEN = "jeton-console-essai-" + uuid.uuid4().hex
VIEWER_TEMPLATE = "https://visionneuse.exemple.test/meddream/?study={study_instance_uid}"
UI_TIMEOUT_MS = 20_000

# --------------------------------------------------------------------------------------------------------
# Plain HTTP: the pages themselves (no servers needed)


def _client(app: FastAPI, base_url: str = "http://console.test") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
def console_app() -> FastAPI:
    app = FastAPI()
    mount(app)
    return app


@pytest.fixture
async def console(console_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(console_app) as client:
        yield client


PAGES = {
    "/console/": ["Console Proxymage", "Déroulement d'une réunion", "Fiche d'inscription d'un patient"],
    "/console/login": ["Jeton d'accès", "Se connecter"],
    "/console/rcps/": ["Paramètres imagerie d'une RCP", "Filtre sur la modalité", "Aucun", "Enregistrer"],
    "/console/rcps/rcp-orl-fictif": ["rcp-orl-fictif", "Examens de moins de X mois"],
    "/console/meetings/": ["Déroulement", "Identifiant de la réunion"],
    "/console/meetings/new": ["Radiologue d'astreinte", "Médecin nucléaire d'astreinte", "OK", "Fermer"],
    "/console/meetings/m-essai/details": ["m-essai", "Radiologue d'astreinte"],
    "/console/meetings/m-essai": ["Liste des patients", "Choisissez un patient"],
    "/console/meetings/m-essai/patients/enr-essai": ["Imagerie", "Actualiser", "Fiche d'inscription"],
    "/console/enrolments/new": [
        "Nom de naissance",
        "Nom d'usage/marital",
        "Prénom",
        "Date de naissance",
        "Consentement",
        "Le patient a été informé de l'informatisation et du partage de ses données personnelles ainsi que de "
        "leur hébergement chez un hébergeur de données de santé agréé et ne s'y est pas opposé",
        "Imagerie",
        "Filtres",
        "Actualiser",
        "Demande d'expertise",
        "Valider",
        "Description",
        "PACS",
        "Date de l'examen",
        "Modalité",
        "Images",
        "Séries",
    ],
    "/console/enrolments/enr-essai": [
        "Fiche d'inscription",
        "enr-essai",
        "Demande d'expertise",
        "Valider",
        "Identité et consentement",
        "Nom de naissance",
        "Nom d'usage/marital",
        "Prénom",
        "Date de naissance",
        "Sexe",
        "Enregistrer l'identité",
        "Annuler l'inscription",
        "Confirmer l'annulation",
        "Revenir à la fiche",
    ],
}


@pytest.mark.parametrize("url", list(PAGES))
async def test_every_page_renders_in_french(console: httpx.AsyncClient, url: str) -> None:
    answer = await console.get(url)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    page = answer.text
    assert '<html lang="fr">' in page
    text = html.unescape(page)
    for label in PAGES[url]:
        assert label in text, f"{label!r} missing from {url}"
    # Only our own script and stylesheet, nothing from the internet.
    assert re.findall(r'(?:src|href)="(https?:)?//', page) == []


async def test_rcp_settings_offers_the_18_modalities_and_three_date_filters(console: httpx.AsyncClient) -> None:
    page = (await console.get("/console/rcps/")).text
    boxes = re.findall(r'<input type="checkbox" id="rcp-modality-([A-Z]{2})" name="modalities"', page)
    assert tuple(boxes) == MODALITIES
    text = html.unescape(page)
    for code, label in MODALITY_LABELS.items():
        assert f"{code}</abbr> {label}" in text
    for expected in ("CT</abbr> Tomodensitométrie", "US</abbr> Ultrasons", "Capture d'écran par image clé"):
        assert expected in text
    assert re.findall(r'name="rcp-date-kind" value="(\w+)"', page) == ["none", "between", "within_months"]


async def test_user_data_arrives_escaped(console: httpx.AsyncClient) -> None:
    title = "<script>alert('FICTIF')</script> RCP ESSAI"
    page = (await console.get("/console/enrolments/new", params={"meeting_title": title, "centre": '"><b>3C'})).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;FICTIF&#39;)&lt;/script&gt; RCP ESSAI" in page
    assert 'value="&#34;&gt;&lt;b&gt;3C"' in page
    # Ids outside the DCC's id syntax never reach a page.
    assert (await console.get("/console/meetings/%3Cscript%3E")).status_code == 404
    assert (await console.get("/console/enrolments/a%22b")).status_code == 404


async def test_root_redirects_to_the_console(console: httpx.AsyncClient) -> None:
    answer = await console.get("/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"


async def test_login_sets_an_httponly_strict_cookie_and_logout_clears_it(
    console_app: FastAPI, console: httpx.AsyncClient
) -> None:
    answer = await console.post("/console/session", data={"token": "abc.DEF-123", "next": "/console/meetings/m-1"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/meetings/m-1"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=abc.DEF-123;")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS requests get Secure

    async with _client(console_app, "https://console.test") as secure:
        assert "Secure" in (await secure.post("/console/session", data={"token": "abc"})).headers["set-cookie"]

    answer = await console.post("/console/logout")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login"
    assert re.match(rf'{COOKIE_NAME}=""?;.*Max-Age=0', answer.headers["set-cookie"])


@pytest.mark.parametrize(
    "target",
    [
        "https://exemple.test/",
        "//exemple.test/console/",
        "/api/v1/meetings",
        "/\\x",
        "/\\exemple.test/viewer/",
        "https://exemple.test/viewer/",
        "//exemple.test/viewer/",
        "/viewer",
        "/viewerx/",
        "/viewer/../api/v1/meetings",
        "/console/../dicom-web/studies",
        "/viewer/%2e%2e/api/v1/meetings",
        "/viewer/a%2Fb",
        "/viewer/x\r\nSet-Cookie: a=b",
        "/dicom-web/studies",
    ],
)
async def test_login_never_redirects_off_the_console_or_viewer(console: httpx.AsyncClient, target: str) -> None:
    answer = await console.post("/console/session", data={"token": "abc", "next": target})
    assert answer.headers["location"] == "/console/"


@pytest.mark.parametrize("target", ["/viewer/", "/viewer/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.1338.1"])
async def test_login_returns_to_the_viewer(console: httpx.AsyncClient, target: str) -> None:
    answer = await console.post("/console/session", data={"token": "abc", "next": target})
    assert answer.headers["location"] == target
    login = await console.get("/console/login", params={"next": target})
    assert f'name="next" value="{html.escape(target)}"' in login.text


async def test_login_refuses_a_bad_token_and_a_foreign_origin(console: httpx.AsyncClient) -> None:
    answer = await console.post("/console/session", data={"token": "a b;c"})
    assert answer.status_code == 400
    assert "set-cookie" not in answer.headers
    assert "Saisissez le jeton" in answer.text
    foreign = await console.post("/console/session", data={"token": "abc"}, headers={"Origin": "https://exemple.test"})
    assert foreign.status_code == 403
    assert "set-cookie" not in foreign.headers


def test_every_status_has_a_french_label() -> None:
    assert set(IDENTITY_STATUS_LABELS) == set(get_args(IdentityView))
    assert set(RETRIEVAL_STATUS_LABELS) == set(get_args(RetrievalView))
    assert set(NOTIFICATION_STATUS_LABELS) == set(get_args(NotificationStatus))
    assert IDENTITY_STATUS_LABELS["withdrawn"] == "Inscription annulée"
    assert NOTIFICATION_STATUS_LABELS["waiting"] == "En attente"
    assert NOTIFICATION_STATUS_LABELS["not_sent"] == "Non envoyé"
    assert NOTIFICATION_STATUS_LABELS["cancelled"] == "Annulé"


def test_every_near_miss_has_a_french_hint_without_values() -> None:
    hints = script_labels()["hints"]
    assert isinstance(hints, dict)
    assert len(hints) == len(NEAR_MISS_TRAITS) * len(NEAR_MISS_KINDS)
    assert set(NEAR_MISS_KINDS) == set(NearMiss.model_fields["kind"].annotation.__args__)  # type: ignore[union-attr]
    assert set(NEAR_MISS_TRAITS) == set(NearMiss.model_fields["trait"].annotation.__args__)  # type: ignore[union-attr]
    assert near_miss_hint("first_name", "separator") == (
        "Le prénom diffère par un séparateur (tiret ou espace) : vérifier « Jean-Pierre » / « Jean Pierre »"
    )
    assert "jour et le mois inversés" in near_miss_hint("birth_date", "day_month_swapped")
    assert "nom d'usage" in near_miss_hint("birth_name", "birth_name_is_used_name")


# --------------------------------------------------------------------------------------------------------
# In a browser, against the gateway running in-process on the real Kafka and FerretDB


@dataclass
class Gateway:
    """The gateway under test, and the test's seat on Kafka in place of the other services."""

    url: str
    topic_prefix: str
    producer: AIOKafkaProducer
    inbound: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def publish(self, topic: str, event: Event, key: str) -> None:
        await self.producer.send_and_wait(self.topic_prefix + topic, event.to_kafka_value(), key=key.encode())

    async def command(self, topic: str, count: int = 1, **fields: Any) -> dict[str, Any]:
        """The `count`-th event the console's commands published on `topic` with these field values."""

        def found() -> list[dict[str, Any]]:
            return [
                event
                for name, event in self.inbound
                if name == topic and all(event.get(key) == value for key, value in fields.items())
            ]

        async def arrived() -> bool:
            return len(found()) >= count

        await eventually(arrived, 30, f"{count} event(s) on {topic} with {fields}")
        return found()[count - 1]

    async def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            return await client.request(method, path, json=body, timeout=10)


def console_settings(unique: str, token_name: str, **overrides: Any) -> Settings:
    """The settings of a gateway run in-process for a browser test: its own topics and database, free port."""
    overrides.setdefault("health_port", free_port())
    return load_settings(
        Settings,
        topic_prefix=f"it-{unique}.",
        mongo_database=f"it_gateway_{unique}",
        api_tokens=({"name": token_name, "role": "dcc", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()},),
        viewer_url_template=VIEWER_TEMPLATE,
        sse_heartbeat_seconds=2.0,
        **overrides,
    )


@pytest.fixture
async def gateway(stack_env: dict[str, str], unique: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = console_settings(unique, "console-essai")
    async with serving_with_log(settings, tmp_path / "gateway.log") as url:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
        inbound_topics = [settings.topic(topic) for topic in topics.INBOUND_TOPICS]
        consumer = AIOKafkaConsumer(
            *inbound_topics, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest"
        )
        try:
            await producer.start()
            await consumer.start()
            harness = Gateway(url, settings.topic_prefix, producer)

            def received(record: Any) -> None:
                harness.inbound.append((record.topic.removeprefix(settings.topic_prefix), json.loads(record.value)))

            async with consuming(consumer, received):
                yield harness
        finally:
            await stop_in_order(consumer, producer)


@dataclass
class Shots:
    directory: Path
    taken: list[Path] = field(default_factory=list)

    async def take(self, page: Page, name: str, *, keep: bool = False) -> None:
        target = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        await page.screenshot(path=str(target), full_page=True)
        self.taken.append(target)
        if keep:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, SCREENSHOTS / f"console-{target.name}")


async def login_page(browser: Browser, gateway: Gateway) -> tuple[Page, list[str]]:
    """A fresh browser on the console, sent to the login page (no cookie yet: the API says 401); with the list
    the page's script errors go to."""
    context = await browser.new_context(base_url=gateway.url, locale="fr-FR", timezone_id="Europe/Paris")
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto("/console/")
    await expect(page).to_have_url(re.compile(r"/console/login\?expired=1"))
    return page, errors


async def open_console(browser: Browser, gateway: Gateway) -> tuple[Page, list[str]]:
    """A fresh browser session logged in with the test's token; collects the page's script errors."""
    page, errors = await login_page(browser, gateway)
    await page.get_by_label("Jeton d'accès").fill(TOKEN)
    await page.get_by_role("button", name="Se connecter").click()
    await expect(page).to_have_url(f"{gateway.url}/console/")
    cookies = {cookie["name"]: cookie for cookie in await page.context.cookies()}
    assert cookies[COOKIE_NAME]["httpOnly"] is True
    assert cookies[COOKIE_NAME]["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""  # the token is out of the scripts' reach
    return page, errors


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def publish_identity(gateway: Gateway, enrolment_id: str, enrolled: dict[str, Any], **outcome: Any) -> None:
    """Plays the identity-matcher's outcome for `enrolled`, the enrolment event the REST command published."""
    event = IdentityResolved(
        event_id=uuid.uuid4(),
        occurred_at=_now(),
        enrolment_id=enrolment_id,
        source_event_id=uuid.UUID(enrolled["event_id"]),
        **outcome,
    )
    await gateway.publish(topics.IDENTITY_RESOLVED, event, enrolment_id)


async def publish_notification(gateway: Gateway, enrolment_id: str, meeting_id: str, **notification: Any) -> None:
    """Plays the expert-notifier's event for one expert of the enrolment."""
    event = ExpertiseNotification(
        event_id=uuid.uuid4(), occurred_at=_now(), enrolment_id=enrolment_id, meeting_id=meeting_id, **notification
    )
    await gateway.publish(topics.EXPERTISE_NOTIFICATION, event, enrolment_id)


def _study(uid: str, description: str, date: dt.date, modalities: tuple[str, ...], images: int) -> CataloguedStudy:
    return CataloguedStudy(
        study_instance_uid=uid,
        description=description,
        pacs="CHU FICTIF",
        date=date,
        modalities=modalities,
        images=images,
        series=2,
        pacs_patient=PacsPatientRef(patient_id="P-ESSAI-1", issuer="CHU-FICTIF"),
    )


def _listed(enrolment_id: str, *studies: CataloguedStudy) -> ImagingCatalogued:
    """The fetcher's catalogue of the enrolment: these studies, listed now."""
    return ImagingCatalogued(
        event_id=uuid.uuid4(), occurred_at=_now(), enrolment_id=enrolment_id, status="listed", studies=studies
    )


def enrolment_form(enrolment_id: str, meeting_id: str, rcp_id: str, **patient: Any) -> dict[str, Any]:
    """The `POST /api/v1/enrolments` body of a fictitious patient (`patient` sets the identity fields) for a
    meeting a week from now."""
    return {
        "enrolment_id": enrolment_id,
        "meeting_id": meeting_id,
        "rcp_id": rcp_id,
        "meeting_title": "RCP ORL FICTIVE",
        "meeting_date": (dt.date.today() + dt.timedelta(days=7)).isoformat(),
        "centre": "3C FICTIF",
        "patient": {"birth_name": "ESSAI-FICTIF", "sex": "F", **patient},
        "consent": True,
        "requested_by": {"name": "Dr Paul DEMANDEUR"},
    }


async def publish_matched(gateway: Gateway, enrolment_id: str, meeting_id: str, enrolled: dict[str, Any]) -> None:
    """Plays the identity-matcher's `matched` (patient P-ESSAI-1) for `enrolled`."""
    await publish_identity(
        gateway,
        enrolment_id,
        enrolled,
        source_occurred_at=dt.datetime.fromisoformat(enrolled["occurred_at"]),
        meeting_id=meeting_id,
        status="matched",
        pacs_patients=(PacsPatientRef(patient_id="P-ESSAI-1", issuer="CHU-FICTIF"),),
    )


async def publish_ct_and_mr(gateway: Gateway, enrolment_id: str, ct: str, mr: str) -> None:
    """Plays the fetcher's catalogue: a chest CT 20 days old and a neck MR 60 days old."""
    await gateway.publish(
        topics.IMAGING_CATALOGUED,
        _listed(
            enrolment_id,
            _study(ct, "TDM THORAX FICTIF", dt.date.today() - dt.timedelta(days=20), ("CT",), 40),
            _study(mr, "IRM CERVICALE FICTIVE", dt.date.today() - dt.timedelta(days=60), ("MR",), 120),
        ),
        enrolment_id,
    )


def _status(enrolment_id: str, uid: str, status: str, version: int, **extra: Any) -> StudyStatusChanged:
    return StudyStatusChanged(
        event_id=uuid.uuid4(),
        occurred_at=_now(),
        enrolment_id=enrolment_id,
        study_instance_uid=uid,
        status=status,  # type: ignore[arg-type]
        version=version,
        attempts=extra.pop("attempts", 1),
        **extra,
    )


async def test_a_3c_user_goes_through_the_console(gateway: Gateway, browser: Browser, tmp_path: Path) -> None:
    shots = Shots(tmp_path)
    page, errors = await open_console(browser, gateway)
    rcp_id = f"rcp-essai-{uuid.uuid4().hex[:6]}"
    meeting_id = f"m-essai-{uuid.uuid4().hex[:6]}"
    today = dt.date.today()

    # §4.1 RCP settings: CT and MR, studies less than 24 months old.
    await page.get_by_role("link", name="Paramètres imagerie des RCP").click()
    await page.get_by_label("Identifiant de la RCP").fill(rcp_id)
    await page.get_by_label("Intitulé de la RCP").fill("RCP ORL FICTIVE")
    await page.get_by_label("Centre").fill("3C FICTIF")
    await page.get_by_label("CT Tomodensitométrie").check()
    await page.get_by_label("MR Résonance magnétique").check()
    await page.get_by_label("Examens de moins de X mois").check()
    await page.get_by_label("X =").fill("24")
    await shots.take(page, "parametres-rcp", keep=True)
    await page.get_by_role("button", name="Enregistrer").click()
    await expect(page.locator("#form-status")).to_contain_text("Paramètres imagerie enregistrés")
    settings = await gateway.command(topics.RCP_SETTINGS, rcp_id=rcp_id)
    assert settings["imaging"] == {"modalities": ["CT", "MR"], "date_filter": {"kind": "within_months", "months": 24}}
    assert settings["title"] == "RCP ORL FICTIVE"

    async def rcp_known() -> bool:
        return (await gateway.api("GET", f"/api/v1/rcps/{rcp_id}")).status_code == 200

    await eventually(rcp_known, 30, "the gateway to know the RCP's filters")

    # §4.2 meeting: the on-call radiologist and nuclear physician.
    await page.get_by_role("link", name="Réunion : experts d'astreinte").click()
    await page.get_by_label("Identifiant de la réunion").fill(meeting_id)
    await page.get_by_label("Identifiant de la RCP").fill(rcp_id)
    await page.get_by_label("Intitulé de la RCP").fill("RCP ORL FICTIVE")
    await page.get_by_label("Date").fill((today + dt.timedelta(days=7)).strftime("%d/%m/%Y"))
    await page.get_by_label("Centre").fill("3C FICTIF")
    radiologist = page.locator("fieldset", has_text="Radiologue d'astreinte")
    await radiologist.get_by_label("Nom").fill("Dr Jeanne ESSAI")
    await radiologist.get_by_label("Adresse de messagerie sécurisée").fill("jeanne.essai@chu-fictif.mssante.fr")
    nuclear = page.locator("fieldset", has_text="Médecin nucléaire d'astreinte")
    await nuclear.get_by_label("Nom").fill("Dr Paul EXEMPLE")
    await nuclear.get_by_label("Adresse de messagerie sécurisée").fill("paul.exemple@chu-fictif.mssante.fr")
    await shots.take(page, "reunion-experts", keep=True)
    await page.get_by_role("button", name="OK", exact=True).click()
    await expect(page.locator("#form-status")).to_contain_text("Experts d'astreinte enregistrés")
    experts = await gateway.command(topics.MEETING_EXPERTS, meeting_id=meeting_id)
    assert experts["on_call_radiologist"] == {"name": "Dr Jeanne ESSAI", "email": "jeanne.essai@chu-fictif.mssante.fr"}
    assert experts["on_call_nuclear_physician"]["name"] == "Dr Paul EXEMPLE"

    # §5 enrolment with consent: the Imaging tab appears only once consent is ticked.
    await page.get_by_role("link", name="Inscrire un patient à cette réunion").click()
    await expect(page.get_by_label("Identifiant de la réunion")).to_have_value(meeting_id)
    await expect(page.get_by_label("Intitulé de la RCP")).to_have_value("RCP ORL FICTIVE")
    enrolment_id = await page.get_by_label("Identifiant de l'inscription").input_value()
    await page.get_by_label("Nom de naissance").fill("ESSAI-FICTIF")
    await page.get_by_label("Prénom").fill("Catherine")
    await page.get_by_label("Sexe").select_option("F")
    await page.get_by_label("Date de naissance").fill("12/04/1956")
    await page.get_by_label("Médecin demandeur").fill("Dr Paul DEMANDEUR")
    imaging = page.locator("#imagerie")
    await expect(imaging).to_be_hidden()
    await page.get_by_label("Le patient a été informé").check()
    await expect(imaging).to_be_visible()
    enrolled = await gateway.command(topics.PATIENT_ENROLLED, enrolment_id=enrolment_id)
    assert enrolled["consent"] is True
    assert enrolled["patient"]["birth_name"] == "ESSAI-FICTIF"
    assert enrolled["meeting_id"] == meeting_id

    # The identity-matcher's and study-fetcher's outcomes, played by the test.
    await publish_identity(
        gateway,
        enrolment_id,
        enrolled,
        meeting_id=meeting_id,
        meeting_date=today + dt.timedelta(days=7),
        status="matched",
        pacs_patients=(PacsPatientRef(patient_id="P-ESSAI-1", issuer="CHU-FICTIF"),),
    )
    ct, mr, us = "1.2.826.0.1.3680043.9.9999.1", "1.2.826.0.1.3680043.9.9999.2", "1.2.826.0.1.3680043.9.9999.3"
    await gateway.publish(
        topics.IMAGING_CATALOGUED,
        _listed(
            enrolment_id,
            _study(ct, "TDM THORAX FICTIF", today - dt.timedelta(days=20), ("CT", "SR"), 40),
            _study(mr, "IRM CERVICALE FICTIVE", today - dt.timedelta(days=60), ("MR",), 120),
            _study(us, "ECHOGRAPHIE FICTIVE", today - dt.timedelta(days=90), ("US",), 12),
        ),
        enrolment_id,
    )
    identity = page.locator("#identity")
    await expect(identity).to_contain_text("Patient identifié (1 dossier PACS)")
    rows = page.locator("#studies tbody tr")
    await expect(rows).to_have_count(2)  # the RCP's filter: CT and MR only
    await expect(page.locator("#filters-summary")).to_contain_text("modalités CT, MR ; examens de moins de 24 mois")
    await expect(page.locator("#studies thead th")).to_have_text(
        ["Sélection", "Description", "PACS", "Date de l'examen", "Modalité", "Images", "Séries", "État"]
    )
    await expect(rows.first).to_contain_text("TDM THORAX FICTIF")
    await expect(rows.first).to_contain_text("CT/SR")

    # "Filtres": same options as §4.1; "Tous les examens" lists the ultrasound too.
    await page.get_by_role("button", name="Filtres", exact=True).click()
    await expect(page.locator("#filters-panel")).to_be_visible()
    await page.get_by_role("button", name="Tous les examens").click()
    await expect(rows).to_have_count(3)
    await page.get_by_role("button", name="Filtres", exact=True).click()
    await page.locator("#f-modality-US").check()
    await page.locator("#f-modality-CT").uncheck()
    await page.locator("#f-modality-MR").uncheck()
    await page.get_by_role("button", name="OK").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("ECHOGRAPHIE FICTIVE")
    await page.get_by_role("button", name="Filtres", exact=True).click()
    await page.get_by_role("button", name="Filtres par défaut de la RCP").click()
    await expect(rows).to_have_count(2)

    # §5–§6: two studies with an expertise request, then "Valider".
    await page.get_by_label("Sélectionner l'examen TDM THORAX FICTIF").check()
    await page.get_by_label("Sélectionner l'examen IRM CERVICALE FICTIVE").check()
    await page.get_by_label("Demande d'expertise").check()
    await shots.take(page, "inscription-imagerie", keep=True)
    await page.get_by_role("button", name="Valider").click()
    selection = await gateway.command(topics.STUDIES_SELECTED, enrolment_id=enrolment_id)
    assert sorted(selection["study_instance_uids"]) == sorted([ct, mr])
    assert selection["expertise_requested"] is True

    # §7 Déroulement: the meeting's patients, then this patient's Imaging tab, live.
    await expect(page).to_have_url(f"{gateway.url}/console/meetings/{meeting_id}/patients/{enrolment_id}")
    await expect(page.locator("#patients")).to_contain_text("ESSAI-FICTIF Catherine")
    cards = page.locator("#loaded-studies > li")
    await expect(cards).to_have_count(2)
    for card in (cards.nth(0), cards.nth(1)):
        await expect(card).to_contain_text("La visualisation de cet examen n'est pas encore disponible.")

    await gateway.publish(
        topics.STUDY_STATUS,
        _status(enrolment_id, ct, "retrieving", 1, progress=Progress(done=10, total=40)),
        enrolment_id,
    )
    await gateway.publish(
        topics.STUDY_STATUS,
        _status(
            enrolment_id,
            mr,
            "not_yet_available",
            1,
            reason="L'examen n'est pas encore arrivé dans MIRC.",
            next_attempt_at=_now() + dt.timedelta(minutes=5),
        ),
        enrolment_id,
    )
    ct_card = cards.filter(has_text="TDM THORAX FICTIF")
    mr_card = cards.filter(has_text="IRM CERVICALE FICTIVE")
    await expect(ct_card.locator("progress")).to_have_attribute("value", "10")
    await expect(ct_card).to_contain_text("10 / 40 images")
    await expect(mr_card).to_contain_text("L'examen n'est pas encore arrivé dans MIRC.")
    await expect(mr_card).to_contain_text("Prochaine tentative automatique")
    await shots.take(page, "deroulement-en-cours", keep=True)

    await gateway.publish(topics.STUDY_STATUS, _status(enrolment_id, ct, "available", 2), enrolment_id)
    await gateway.publish(topics.STUDY_STATUS, _status(enrolment_id, mr, "available", 2, attempts=2), enrolment_id)
    for role in ("radiologist", "nuclear_physician"):
        await publish_notification(gateway, enrolment_id, meeting_id, role=role, status="sent", version=1)
    links = page.get_by_role("link", name=re.compile("^Visuel disponible"))
    await expect(links).to_have_count(2)
    ct_link = ct_card.get_by_role("link", name=re.compile("^Visuel disponible"))
    await expect(ct_link).to_have_attribute("href", VIEWER_TEMPLATE.format(study_instance_uid=ct))
    await expect(ct_link).to_have_attribute("target", "_blank")
    await expect(ct_link).to_have_attribute("rel", "noopener noreferrer")
    # Clicking opens the viewer in a new tab (a stand-in page served by the browser's router: no network).
    await page.context.route(
        "https://visionneuse.exemple.test/**",
        lambda route: route.fulfill(content_type="text/html", body="<title>Visionneuse FICTIVE</title>"),
    )
    async with page.context.expect_page() as opened:
        await ct_link.click()
    viewer_tab = await opened.value
    await expect(viewer_tab).to_have_url(VIEWER_TEMPLATE.format(study_instance_uid=ct))
    await expect(viewer_tab).to_have_title("Visionneuse FICTIVE")
    assert await viewer_tab.evaluate("window.opener === null")
    await viewer_tab.close()
    await expect(page.locator("#expertise-summary")).to_contain_text("Radiologue d'astreinte : envoyée")
    await expect(page.locator("#expertise-summary")).to_contain_text("Médecin nucléaire d'astreinte : envoyée")
    await expect(page.locator("#patients")).to_contain_text("2/2 examens disponibles")
    await shots.take(page, "deroulement-visuel-disponible", keep=True)

    # The trash button, with a confirmation, removes one study.
    confirmations: list[str] = []

    async def accept(dialog: Dialog) -> None:
        confirmations.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    await mr_card.get_by_role("button", name=re.compile("^Retirer l'examen IRM CERVICALE FICTIVE")).click()
    removal = await gateway.command(topics.STUDY_REMOVED, enrolment_id=enrolment_id)
    assert removal["study_instance_uid"] == mr
    assert len(confirmations) == 1
    assert "IRM CERVICALE FICTIVE" in confirmations[0]
    await expect(cards).to_have_count(1)
    await expect(cards.first).to_contain_text("TDM THORAX FICTIF")
    await expect(page.locator("#patients")).to_contain_text("1/1 examen disponible")

    # "Actualiser" asks the services to look again.
    await page.get_by_role("button", name="Actualiser").click()
    await gateway.command(topics.IMAGING_REFRESH, enrolment_id=enrolment_id)
    await shots.take(page, "deroulement-apres-retrait", keep=True)

    # The meetings the gateway knows are listed for the Déroulement.
    await page.get_by_role("link", name="Déroulement", exact=True).click()
    await page.get_by_role("link", name=re.compile("^RCP ORL FICTIVE du ")).click()
    await expect(page).to_have_url(f"{gateway.url}/console/meetings/{meeting_id}")
    await expect(page.locator("#patients")).to_contain_text("ESSAI-FICTIF Catherine")
    assert errors == []


async def test_identity_outcomes_and_hostile_titles(gateway: Gateway, browser: Browser, tmp_path: Path) -> None:
    shots = Shots(tmp_path)
    page, errors = await open_console(browser, gateway)
    meeting_id = f"m-essai-{uuid.uuid4().hex[:6]}"
    hostile = "<img src=x onerror=\"window.__pirate='img'\"><script>window.__pirate='script'</script> RCP ESSAI"

    async def enrol(enrolment_id: str, first_name: str, consent: bool) -> dict[str, Any]:
        body = {
            "enrolment_id": enrolment_id,
            "meeting_id": meeting_id,
            "rcp_id": "rcp-essai",
            "meeting_title": hostile,
            "meeting_date": dt.date.today().isoformat(),
            "centre": "3C FICTIF",
            "patient": {
                "birth_name": "EXEMPLE",
                "used_name": None,
                "first_name": first_name,
                "birth_date": "1961-09-30",
                "sex": "M",
            },
            "consent": consent,
            "requested_by": {"name": "Dr Paul DEMANDEUR"},
        }
        assert (await gateway.api("POST", "/api/v1/enrolments", body)).status_code == 202
        return await gateway.command(topics.PATIENT_ENROLLED, enrolment_id=enrolment_id)

    unmatched = await enrol("enr-essai-nonrapproche", "Jean Pierre", consent=True)
    refused = await enrol("enr-essai-sansconsentement", "Jacques", consent=False)

    meeting = {"meeting_id": meeting_id, "meeting_date": dt.date.today()}
    await publish_identity(gateway, "enr-essai-sansconsentement", refused, **meeting, status="no_consent")
    await publish_identity(
        gateway,
        "enr-essai-nonrapproche",
        unmatched,
        **meeting,
        status="unmatched",
        near_misses=(
            NearMiss(trait="first_name", kind="separator"),
            NearMiss(trait="birth_date", kind="day_month_swapped"),
        ),
    )

    await page.goto("/console/enrolments/enr-essai-nonrapproche")
    identity = page.locator("#identity")
    await expect(identity).to_contain_text("Patient non trouvé")
    await expect(identity).to_contain_text(
        "Le prénom diffère par un séparateur (tiret ou espace) : vérifier « Jean-Pierre » / « Jean Pierre »"
    )
    await expect(identity).to_contain_text("La date de naissance a peut-être le jour et le mois inversés")
    await expect(page.locator("#enrolment-meeting")).to_contain_text("<script>")
    await shots.take(page, "patient-non-trouve", keep=True)

    await page.goto(f"/console/meetings/{meeting_id}/patients/enr-essai-sansconsentement")
    await expect(page.locator("#identity")).to_contain_text("Pas de consentement")
    await expect(page.locator("#meeting-title")).to_contain_text("<script>window.__pirate='script'</script> RCP ESSAI")
    await expect(page.locator("#patients > li")).to_have_count(2)
    assert await page.evaluate("window.__pirate === undefined")
    assert await page.locator("#meeting-title img, #meeting-title script").count() == 0
    await shots.take(page, "pas-de-consentement")
    assert errors == []


async def test_correct_the_identity_then_withdraw_from_the_enrolment_page(
    gateway: Gateway, browser: Browser, tmp_path: Path
) -> None:
    """CONTRACT v1.1 on the enrolment page: identity and consent visible and correctable (the enrolled event
    published again, same id, other fields kept), French reasons only, "Annuler l'inscription" confirmed in a
    dialog (going back publishes nothing), then the withdrawn state, here and in the Déroulement."""
    shots = Shots(tmp_path)
    page, errors = await open_console(browser, gateway)
    meeting_id = f"m-essai-{uuid.uuid4().hex[:6]}"
    enrolment_id = f"enr-essai-{uuid.uuid4().hex[:6]}"
    body = enrolment_form(
        enrolment_id, meeting_id, "rcp-essai", used_name="EXEMPLE", first_name="Catherine", birth_date="1956-04-12"
    )
    assert (await gateway.api("POST", "/api/v1/enrolments", body)).status_code == 202
    first = await gateway.command(topics.PATIENT_ENROLLED, enrolment_id=enrolment_id)

    async def resolved(source: dict[str, Any]) -> None:
        await publish_matched(gateway, enrolment_id, meeting_id, source)

    await resolved(first)
    ct, mr = "1.2.826.0.1.3680043.9.9998.1", "1.2.826.0.1.3680043.9.9998.2"
    await publish_ct_and_mr(gateway, enrolment_id, ct, mr)
    selection = {"study_instance_uids": [ct, mr], "expertise_requested": True}
    assert (await gateway.api("PUT", f"/api/v1/enrolments/{enrolment_id}/selection", selection)).status_code == 202
    await gateway.publish(topics.STUDY_STATUS, _status(enrolment_id, ct, "available", 2), enrolment_id)
    # A reason as the fetcher published it before v1.1 (English, no code), and one as it does now.
    legacy = "not yet in MIRC; next automatic try at 2026-12-02 08:00:00 UTC"
    await gateway.publish(
        topics.STUDY_STATUS, _status(enrolment_id, mr, "not_yet_available", 2, reason=legacy), enrolment_id
    )
    waiting = Reason.of("waiting_available_study")
    await publish_notification(
        gateway,
        enrolment_id,
        meeting_id,
        role="radiologist",
        status="waiting",
        reason=waiting.text,
        reason_code=waiting.code,
        version=1,
    )

    # The Déroulement: French labels and reasons, never the English ones.
    await page.goto(f"/console/meetings/{meeting_id}/patients/{enrolment_id}")
    cards = page.locator("#loaded-studies > li")
    await expect(cards).to_have_count(2)
    await expect(cards.filter(has_text="IRM CERVICALE FICTIVE")).to_contain_text(TEXTS["not_in_mirc"])
    await expect(page.locator("#expertise-summary")).to_contain_text(
        "Radiologue d'astreinte : En attente le "  # then the date, then the reason
    )
    await expect(page.locator("#expertise-summary")).to_contain_text(waiting.text)
    assert "not yet in MIRC" not in await page.locator("main").inner_text()

    # The enrolment page: identity and consent as the DCC sent them.
    await page.goto(f"/console/enrolments/{enrolment_id}")
    await expect(page.locator("#identity")).to_contain_text("Patient identifié (1 dossier PACS)")
    identity_form = page.locator("#identity-form")
    await expect(identity_form.get_by_label("Nom de naissance")).to_have_value("ESSAI-FICTIF")
    await expect(identity_form.get_by_label("Nom d'usage/marital")).to_have_value("EXEMPLE")
    await expect(identity_form.get_by_label("Prénom")).to_have_value("Catherine")
    await expect(identity_form.get_by_label("Date de naissance")).to_have_value("12/04/1956")
    await expect(identity_form.get_by_label("Sexe")).to_have_value("F")
    await expect(identity_form.get_by_label("Le patient a été informé")).to_be_checked()
    await expect(page.locator("#studies tbody tr", has_text="IRM CERVICALE FICTIVE")).to_contain_text(
        TEXTS["not_in_mirc"]
    )
    assert "not yet in MIRC" not in await page.locator("main").inner_text()

    # Correcting the first name publishes the enrolled event again: same id, every other field kept.
    await identity_form.get_by_label("Prénom").fill("Catherine-Marie")
    await shots.take(page, "fiche-correction-identite", keep=True)
    await identity_form.get_by_role("button", name="Enregistrer l'identité").click()
    corrected = await gateway.command(topics.PATIENT_ENROLLED, count=2, enrolment_id=enrolment_id)
    assert corrected["event_id"] != first["event_id"]
    assert corrected["patient"] == {**body["patient"], "first_name": "Catherine-Marie"}
    kept = {key: value for key, value in body.items() if key != "patient"}
    assert {key: corrected[key] for key in kept} == kept
    await expect(page.locator("#identity-status")).to_contain_text("Identité enregistrée")
    await expect(page.locator("#identity")).to_contain_text("Recherche du patient en cours")
    await resolved(corrected)
    await expect(page.locator("#identity")).to_contain_text("Patient identifié (1 dossier PACS)")
    await expect(identity_form.get_by_label("Prénom")).to_have_value("Catherine-Marie")

    # "Annuler l'inscription": a confirmation dialog; going back publishes nothing.
    dialog = page.get_by_role("dialog", name="Annuler l'inscription de ce patient ?")
    await page.get_by_role("button", name="Annuler l'inscription").click()
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Revenir à la fiche").click()
    await expect(dialog).to_be_hidden()
    await page.get_by_role("button", name="Annuler l'inscription").click()
    await dialog.get_by_label("Motif (facultatif").fill("présenté dans une autre RCP")
    await shots.take(page, "fiche-annulation-confirmation", keep=True)
    await dialog.get_by_role("button", name="Confirmer l'annulation").click()
    withdrawal = await gateway.command(topics.ENROLMENT_WITHDRAWN, enrolment_id=enrolment_id)
    assert withdrawal["reason"] == "présenté dans une autre RCP"  # the first one: "Revenir" sent nothing
    identity = page.locator("#identity")
    await expect(identity).to_contain_text("Inscription annulée")
    await expect(identity).to_contain_text("Motif : présenté dans une autre RCP")
    await expect(page.get_by_role("button", name="Annuler l'inscription")).to_be_hidden()
    await expect(page.locator("#identity-form-hint")).to_contain_text("Pour rouvrir l'inscription")
    await expect(page.locator("#studies tbody tr")).to_have_count(2)
    for row in (page.locator("#studies tbody tr").nth(0), page.locator("#studies tbody tr").nth(1)):
        await expect(row).to_contain_text("Examen retiré")
        await expect(row).to_contain_text(TEXTS["enrolment_withdrawn"])
    await expect(page.locator("#identity-status")).to_be_empty()
    await shots.take(page, "fiche-inscription-annulee", keep=True)

    await page.goto(f"/console/meetings/{meeting_id}/patients/{enrolment_id}")
    await expect(page.locator("#patients")).to_contain_text("Inscription annulée")
    await expect(page.locator("#patients")).not_to_contain_text("examens disponibles")
    await expect(page.locator("#identity")).to_contain_text("Inscription annulée")
    await expect(page.locator("#loaded-studies > li")).to_have_count(0)
    await expect(page.locator("#loaded-empty")).to_be_hidden()
    await shots.take(page, "deroulement-inscription-annulee", keep=True)
    assert errors == []


async def test_cancelling_a_new_enrolment_already_sent_withdraws_it(gateway: Gateway, browser: Browser) -> None:
    page, errors = await open_console(browser, gateway)
    await page.goto(
        "/console/enrolments/new?meeting_id=m-essai-annuler&rcp_id=rcp-essai"
        "&meeting_title=RCP%20FICTIVE&meeting_date=2030-01-02&centre=3C%20FICTIF"
    )
    enrolment_id = await page.get_by_label("Identifiant de l'inscription").input_value()
    await page.get_by_label("Nom de naissance").fill("ESSAI-FICTIF")
    await page.get_by_label("Prénom").fill("Jeanne")
    await page.get_by_label("Sexe").select_option("F")
    await page.get_by_label("Date de naissance").fill("31/01/1960")
    await page.get_by_label("Médecin demandeur").fill("Dr Paul DEMANDEUR")
    await page.get_by_label("Le patient a été informé").check()  # publishes the enrolment
    await gateway.command(topics.PATIENT_ENROLLED, enrolment_id=enrolment_id)
    confirmations: list[str] = []

    async def accept(dialog: Dialog) -> None:
        confirmations.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    await page.get_by_role("link", name="Annuler").click()
    withdrawal = await gateway.command(topics.ENROLMENT_WITHDRAWN, enrolment_id=enrolment_id)
    assert withdrawal["reason"] is None
    assert len(confirmations) == 1
    assert enrolment_id in confirmations[0]
    await expect(page).to_have_url(f"{gateway.url}/console/")
    assert errors == []
