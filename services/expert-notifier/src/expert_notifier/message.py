"""The expertise e-mail (SEED.md §6), rendered from the facts the notifier keeps (pure: no I/O).

Choices, documented here because the guide leaves them open:
- civility from the DCC's sex: `F` -> "Mme", `M` -> "M."; `U` (unknown) -> no civility at all ("Le dossier
  de Camille EXEMPLE"): guessing would be wrong half of the time;
- patient display name: first name as given, family name in capitals (the French administrative usage),
  the used name first with "née"/"né"/"né(e)" and the birth name when the DCC gives a different used name;
- "Dr <expert>": the DCC's directory names often already carry the title ("Dr Jeanne MARTIN"), so a name
  starting with Dr/Docteur/Pr/Professeur is not prefixed again;
- dates `DD/MM/YYYY`; the 3C signature is the meeting's centre;
- the subject never names the patient: "Demande d'expertise – <meeting title> du <date>";
- the HTML alternative is rendered by Jinja2 with autoescape, so DCC text (a meeting title containing
  `<script>`...) arrives as inert text; the plain-text alternative is the same text unescaped;
- the Message-ID is derived from the notification key (enrolment, role, address), hashed so that the
  header reveals neither the enrolment nor the address, and stable across retries.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.policy
import email.utils
import hashlib
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Final

import jinja2
from proxymage_shared.events import PatientEnrolled, Sex

CIVILITY: Final[dict[Sex, str | None]] = {"F": "Mme", "M": "M.", "U": None}
BORN: Final[dict[Sex, str]] = {"F": "née", "M": "né", "U": "né(e)"}
_TITLED = re.compile(r"^\s*(dr|docteur|pr|professeur)\b\.?", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

_TEXT = jinja2.Environment(
    loader=jinja2.PackageLoader("expert_notifier", "templates"),
    autoescape=False,  # noqa: S701 - the plain-text alternative; the HTML one has its own escaping environment
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
_HTML = jinja2.Environment(
    loader=jinja2.PackageLoader("expert_notifier", "templates"),
    autoescape=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True, slots=True)
class PatientFacts:
    """All the notifier keeps of a patient: what the e-mail shows, nothing else (no birth date)."""

    civility: str | None
    display_name: str
    requested_by: str


@dataclass(frozen=True, slots=True)
class MailSettings:
    mail_from: str
    reply_to: str | None
    registration_url: str
    message_id_domain: str


@dataclass(frozen=True, slots=True)
class MeetingText:
    title: str
    date: dt.date
    centre: str


def single_line(text: str) -> str:
    """DCC text is put in headers and sentences: no line breaks or control characters."""
    return " ".join(_CONTROL.sub(" ", text).split())


def patient_facts(event: PatientEnrolled) -> PatientFacts:
    patient = event.patient
    first = single_line(patient.first_name)
    birth = single_line(patient.birth_name).upper()
    used = single_line(patient.used_name).upper() if patient.used_name else None
    display = f"{first} {used} {BORN[patient.sex]} {birth}" if used and used != birth else f"{first} {birth}"
    return PatientFacts(CIVILITY[patient.sex], display, single_line(event.requested_by.name))


def salutation(expert_name: str) -> str:
    name = single_line(expert_name)
    return name if _TITLED.match(name) else f"Dr {name}"


def french_date(value: dt.date) -> str:
    return f"{value:%d/%m/%Y}"


def subject(meeting: MeetingText) -> str:
    return f"Demande d'expertise – {single_line(meeting.title)} du {french_date(meeting.date)}"


def message_id(notification_key: str, domain: str) -> str:
    """26 base32 characters (130 bits) of the key's SHA-256: short enough that the header is not folded."""
    digest = base64.b32encode(hashlib.sha256(notification_key.encode()).digest()).decode().lower()[:26]
    return f"<{digest}@{domain}>"


def default_message_id_domain(mail_from: str) -> str:
    _, address = email.utils.parseaddr(mail_from)
    return address.rpartition("@")[2] or "proxymage.invalid"


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def render(expert_name: str, patient: PatientFacts, meeting: MeetingText, settings: MailSettings) -> RenderedEmail:
    values = {
        "salutation": salutation(expert_name),
        "patient": f"{patient.civility} {patient.display_name}" if patient.civility else patient.display_name,
        "requested_by": patient.requested_by,
        "meeting_title": single_line(meeting.title),
        "meeting_date": french_date(meeting.date),
        "registration_url": settings.registration_url,
        "signature": single_line(meeting.centre),
        "subject": subject(meeting),
    }
    return RenderedEmail(
        subject=values["subject"],
        text=_TEXT.get_template("expertise.txt").render(values),
        html=_HTML.get_template("expertise.html").render(values),
    )


def build_message(
    *,
    notification_key: str,
    recipient_name: str,
    recipient_email: str,
    rendered: RenderedEmail,
    settings: MailSettings,
    now: dt.datetime,
) -> EmailMessage:
    """A UTF-8 multipart/alternative message; headers with non-ASCII text are RFC 2047 encoded (relays
    need not offer SMTPUTF8), bodies quoted-printable (relays need not offer 8BITMIME)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = settings.mail_from
    local, _, domain = recipient_email.rpartition("@")
    message["To"] = Address(display_name=single_line(recipient_name), username=local, domain=domain)
    if settings.reply_to:
        message["Reply-To"] = settings.reply_to
    message["Subject"] = rendered.subject
    message["Date"] = email.utils.format_datetime(now.astimezone(dt.UTC))
    message["Message-ID"] = message_id(notification_key, settings.message_id_domain)
    # Automatic message: vacation responders must not answer it (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message
