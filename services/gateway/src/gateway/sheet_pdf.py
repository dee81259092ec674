"""The meeting sheet as a PDF (`GET /api/v1/meetings/{meeting_id}/sheet.pdf`), pure: a `MeetingSheet` in, the
document's bytes out (fpdf2, no I/O).

A4 portrait, in French: the meeting, its on-call experts, then every patient (birth date, sex, requesting
doctor, imaging state) with a table of its selected studies and each one's state and reason. A patient's block
starts on a new page when fewer than a few lines are left, so a name is never alone at the foot of a page;
tables that go on repeat their heading row. Each page says the meeting, the page number and when it was made.

Fonts: the PDF core fonts (Helvetica), encoded as Windows-1252, which holds every French letter (é è ê ë à â
ç î ï ô û ù ü ÿ œ æ and their capitals), the typographic quotes and dashes. A character outside it (never in
French, possible in a title typed elsewhere) is printed as `?` rather than failing the whole sheet.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from fpdf import FPDF
from fpdf.fonts import FontFace

from gateway.console.labels import (
    EXPERT_ROLE_LABELS,
    IDENTITY_STATUS_LABELS,
    IMAGING_STATE_LABELS,
    RETRIEVAL_DETAIL_LABELS,
    RETRIEVAL_STATUS_LABELS,
    SEX_LABELS,
)
from gateway.meeting_day import MeetingSheet, SheetPatient, SheetStudy, fr_date

ENCODING: Final = "windows-1252"
FONT: Final = "Helvetica"
_PAGE_MARGIN_MM: Final = 15
_LINE_MM: Final = 5.5
# A patient's heading and at least two study rows fit, or the block starts on the next page.
_MIN_BLOCK_MM: Final = 40
_COLUMNS: Final = (("Date", 20), ("Modalité", 20), ("Examen", 58), ("PACS", 27), ("État", 55))
_HEADING_STYLE: Final = FontFace(emphasis="BOLD", fill_color=(230, 235, 242))


def printable(text: str) -> str:
    """`text` with what Windows-1252 cannot encode replaced by `?` (see the module's docstring)."""
    return text.encode(ENCODING, errors="replace").decode(ENCODING)


def patient_name(patient: SheetPatient) -> str:
    """NOM (NOM DE NAISSANCE) Prénom, as the console writes it; the enrolment id while the DCC has not said."""
    person = patient.patient
    if person is None:
        return f"Inscription {patient.enrolment_id}"
    birth = person.birth_name.upper()
    family = f"{person.used_name.upper()} ({birth})" if person.used_name else birth
    return f"{family} {person.first_name}"


def identity_line(patient: SheetPatient) -> str:
    """Birth date, sex and requesting doctor: what the room checks before looking at the images."""
    person = patient.patient
    parts = []
    if person is not None:
        born = "Née" if person.sex == "F" else "Né" if person.sex == "M" else "Né(e)"
        parts.append(f"{born} le {fr_date(person.birth_date)}")
        parts.append(f"Sexe : {SEX_LABELS.get(person.sex, person.sex)}")
    parts.append(f"Médecin demandeur : {patient.requested_by or 'non renseigné'}")
    return " — ".join(parts)


def study_state(study: SheetStudy) -> str:
    """The study's state in the console's words, with its reason (or the detail of a pending state)."""
    label = RETRIEVAL_STATUS_LABELS.get(study.status, study.status)
    detail = study.reason_text or RETRIEVAL_DETAIL_LABELS.get(study.status)
    if not detail or study.status == "available":
        return label
    return f"{label} {detail[:1].upper()}{detail[1:]}"  # the reason follows a full sentence


def meeting_heading(sheet: MeetingSheet) -> str:
    title = sheet.title or f"Réunion {sheet.meeting_id}"
    return f"{title} du {fr_date(sheet.date)}" if sheet.date else title


class _SheetDocument(FPDF):
    def __init__(self, sheet: MeetingSheet, printed_at: dt.datetime) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.core_fonts_encoding = ENCODING
        self.sheet = sheet
        self.printed_at = printed_at
        self.set_margins(_PAGE_MARGIN_MM, _PAGE_MARGIN_MM, _PAGE_MARGIN_MM)
        self.set_auto_page_break(auto=True, margin=_PAGE_MARGIN_MM + 5)
        self.set_title(printable(f"Fiche de la réunion — {meeting_heading(sheet)}"))
        self.set_creator("Proxymage")
        self.set_lang("fr-FR")

    def write_line(self, text: str, size: float = 10, style: str = "", height: float = _LINE_MM) -> None:
        self.set_font(FONT, style, size)
        self.multi_cell(0, height, printable(text), new_x="LMARGIN", new_y="NEXT")

    def footer(self) -> None:
        self.set_y(-(_PAGE_MARGIN_MM + 2))
        self.set_font(FONT, "", 8)
        made = self.printed_at.strftime("%d/%m/%Y à %H:%M")
        text = f"{meeting_heading(self.sheet)} — éditée le {made} — page {self.page_no()}/{{nb}}"
        self.cell(0, 5, printable(text), align="C")


def _write_meeting(document: _SheetDocument, sheet: MeetingSheet) -> None:
    document.write_line("Fiche de la réunion", 18, "B", 9)
    document.write_line(meeting_heading(sheet), 13, "B", 7)
    facts = [f"Centre : {sheet.centre}" if sheet.centre else "", f"Réunion {sheet.meeting_id}"]
    document.write_line(" — ".join(fact for fact in facts if fact))
    experts = (
        ("radiologist", sheet.on_call_radiologist),
        ("nuclear_physician", sheet.on_call_nuclear_physician),
    )
    for role, expert in experts:
        document.write_line(f"{EXPERT_ROLE_LABELS[role]} : {expert.name if expert else 'aucun'}")
    count = len(sheet.patients)
    document.write_line(f"{count} patient{'s' if count > 1 else ''} inscrit{'s' if count > 1 else ''}", 10, "I")
    document.ln(3)


def _write_patient(document: _SheetDocument, patient: SheetPatient) -> None:
    if document.will_page_break(_MIN_BLOCK_MM):
        document.add_page()
    document.set_draw_color(160, 170, 185)
    document.line(_PAGE_MARGIN_MM, document.get_y(), document.w - _PAGE_MARGIN_MM, document.get_y())
    document.ln(2)
    document.write_line(patient_name(patient), 12, "B", 6.5)
    document.write_line(identity_line(patient))
    identity = IDENTITY_STATUS_LABELS.get(patient.identity_status, patient.identity_status)
    document.write_line(f"Identité : {identity} — Imagerie : {IMAGING_STATE_LABELS[patient.imaging_state]}")
    if not patient.studies:
        document.write_line("Aucun examen sélectionné.", 10, "I")
    else:
        document.ln(1)
        document.set_font(FONT, "", 9)
        with document.table(
            col_widths=tuple(width for _, width in _COLUMNS),
            headings_style=_HEADING_STYLE,
            line_height=4.5,
            text_align="LEFT",
            repeat_headings=1,
        ) as table:
            table.row([printable(name) for name, _ in _COLUMNS])
            for study in patient.studies:
                table.row(
                    [
                        fr_date(study.date),
                        "/".join(study.modalities),
                        printable(study.description or "Examen sans description"),
                        printable(study.pacs or ""),
                        printable(study_state(study)),
                    ]
                )
    document.ln(4)


def render_sheet_pdf(sheet: MeetingSheet, printed_at: dt.datetime) -> bytes:
    """The sheet as a PDF document; `printed_at` (the reader's local time) is written in every page's foot."""
    document = _SheetDocument(sheet, printed_at)
    document.add_page()
    _write_meeting(document, sheet)
    if not sheet.patients:
        document.write_line("Aucun patient inscrit à cette réunion pour le moment.", 10, "I")
    for patient in sheet.patients:
        _write_patient(document, patient)
    return bytes(document.output())
