"""The local secure-mail server: STARTTLS required, TLS 1.2+, client certificate from the test CA.
aiosmtplib (the notifier's library) sends with the client certificate; without it, nothing is sent."""

from __future__ import annotations

import email
import email.policy
import ssl
import uuid
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from proxymage_dev.pytest_plugin import SMTP_DIR

CERTS = SMTP_DIR / "certs"
MAILBOX = SMTP_DIR / "mailbox"


def tls_context(certificate: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate:
        context.load_cert_chain(str(CERTS / f"{certificate}.pem"), str(CERTS / f"{certificate}.key"))
    return context


def message(marker: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "proxymage@3c-fictif.mssante.fr"
    msg["To"] = "expert.fictif@chu-fictif.mssante.fr"
    msg["Subject"] = "Demande d'expertise – RCP ORL fictive du 22/03/2023"
    msg["Message-ID"] = f"<{marker}@proxymage.test>"
    msg.set_content("Le dossier de Mme FICTIVE Hélène a été inscrit… Cordialement, 3C")
    msg.add_alternative("<p>Le dossier de Mme FICTIVE Hélène a été inscrit…</p>", subtype="html")
    return msg


def received(marker: str) -> list[Path]:
    return [path for path in MAILBOX.glob("*.eml") if marker.encode() in path.read_bytes()]


def smtp_port(stack_env: dict[str, str]) -> int:
    return int(stack_env["PROXYMAGE_SMTP__PORT"])


async def test_starttls_with_client_certificate_delivers_the_message_intact(stack_env: dict[str, str]) -> None:
    marker = uuid.uuid4().hex
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=smtp_port(stack_env), start_tls=True, tls_context=tls_context("client")
    ) as smtp:
        errors, _ = await smtp.send_message(message(marker))
    assert errors == {}
    [path] = received(marker)
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Demande d'expertise – RCP ORL fictive du 22/03/2023"
    body = parsed.get_body(("plain",))
    assert body is not None
    assert "Hélène a été inscrit" in body.get_content()


@pytest.mark.parametrize("certificate", [None, "rogue-client"], ids=["no-certificate", "untrusted-ca"])
async def test_client_without_a_trusted_certificate_is_refused(
    stack_env: dict[str, str], certificate: str | None
) -> None:
    marker = uuid.uuid4().hex
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, ConnectionError)):
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=smtp_port(stack_env), start_tls=True, tls_context=tls_context(certificate)
        ) as smtp:
            await smtp.send_message(message(marker))
    assert received(marker) == []


async def test_no_mail_in_clear(stack_env: dict[str, str]) -> None:
    marker = uuid.uuid4().hex
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port(stack_env), start_tls=False) as smtp:
            await smtp.send_message(message(marker))
    assert refused.value.code == 530
    assert received(marker) == []
