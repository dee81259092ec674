"""What must never be in a log: the synthetic patients' names and birth dates, and the e-mails' bodies. Pure,
except `email_body_lines` and `scan_files`, which read files."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from proxymage_dev.synthetic import BENCH_PATIENT, PATIENTS, SyntheticPatient

# Given names this short are words as well as names (and the benchmark patient's "Test" is a placeholder):
# matching them alone would report every "Test" of a library's log line.
MIN_GIVEN_NAME = 4
PLACEHOLDER_NAMES = frozenset({"Test"})
# A body line shorter than this ("Bonjour,") proves nothing when found in a log.
MIN_BODY_LINE = 30


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line_number: int
    what: str


def _names(patient: SyntheticPatient) -> set[str]:
    names: set[str] = set()
    for pn in filter(None, (patient.patient_name, patient.birth_name)):
        family, _, given = pn.partition("^")
        names.add(family)
        if len(given) >= MIN_GIVEN_NAME and given not in PLACEHOLDER_NAMES:
            names.add(given)
    return names


def _dates(da: str) -> set[str]:
    """A DICOM DA (YYYYMMDD) as logs could spell it: as stored, ISO, French."""
    if not re.fullmatch(r"\d{8}", da):
        return {da}
    year, month, day = da[:4], da[4:6], da[6:]
    return {da, f"{year}-{month}-{day}", f"{day}/{month}/{year}"}


def patient_patterns(patients: Sequence[SyntheticPatient] = (*PATIENTS, BENCH_PATIENT)) -> dict[str, re.Pattern[str]]:
    """One regular expression per identifying value, named by what it is (the value itself is PHI, even synthetic:
    the report names the patient key and the kind, never the value)."""
    patterns: dict[str, re.Pattern[str]] = {}
    for patient in patients:
        for index, name in enumerate(sorted(_names(patient))):
            # Names as whole words, case-insensitively (logs upper-case them, or not); DICOM's ^ separator too.
            patterns[f"{patient.key}:name{index}"] = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
        for index, date in enumerate(sorted(_dates(patient.birth_date))):
            patterns[f"{patient.key}:birth_date{index}"] = re.compile(rf"(?<![\d.]){re.escape(date)}(?![\d.])")
    return patterns


def body_patterns(bodies: Iterable[str]) -> dict[str, re.Pattern[str]]:
    """The distinctive lines of e-mail bodies (long, not a bare URL) as literal patterns."""
    patterns: dict[str, re.Pattern[str]] = {}
    for body_index, body in enumerate(bodies):
        for line_index, raw in enumerate(body.splitlines()):
            text = raw.strip()
            if len(text) >= MIN_BODY_LINE and not re.fullmatch(r"\S*https?://\S+", text):
                patterns[f"mail{body_index}:line{line_index}"] = re.compile(re.escape(text))
    return patterns


def scan(path: str, lines: Iterable[str], patterns: dict[str, re.Pattern[str]]) -> list[Finding]:
    findings: list[Finding] = []
    for number, line in enumerate(lines, start=1):
        findings.extend(Finding(path, number, what) for what, pattern in patterns.items() if pattern.search(line))
    return findings


def email_body_lines(mailbox: Path) -> list[str]:
    """The text parts of every message the SMTP server accepted (`*.eml`)."""
    bodies = []
    for eml in sorted(mailbox.glob("*.eml")):
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        for part in message.walk():
            if part.get_content_maintype() == "text":
                bodies.append(str(part.get_content()))
    return bodies


def scan_files(paths: Iterable[Path], patterns: dict[str, re.Pattern[str]]) -> tuple[int, list[Finding]]:
    """(files scanned, findings)."""
    files = 0
    findings: list[Finding] = []
    for path in paths:
        files += 1
        with path.open(encoding="utf-8", errors="replace") as handle:
            findings.extend(scan(str(path), handle, patterns))
    return files, findings
