"""The secure-mail adapter: aiosmtplib with STARTTLS required, TLS 1.2+, a client certificate, a CA bundle.

There is no fallback to clear text: `_connect_tls` fails when the relay does not offer STARTTLS, and the
message is only given after the TLS session is up. Every failure is classified once, here (after adit's split
of DICOM errors), by its type, code or cause, never by its words:

| failure                                                          | kind            | what happens         |
|------------------------------------------------------------------|-----------------|----------------------|
| TLS handshake / certificate (ssl.SSLError anywhere in the cause  | `configuration` | reported, retried    |
| chain: no or untrusted client certificate, server certificate    |                 | (an operator fixes   |
| not trusted), STARTTLS not offered, 530 "STARTTLS first",        |                 | it; never in clear)  |
| certificate/key files unreadable                                 |                 |                      |
| connection refused/reset/lost, timeouts, any 4xx (421 included)  | `transient`     | retried with backoff |
| any 5xx, recipient refused with 5xx                              | `permanent`     | `failed`, the reply  |

One message has one recipient (each expert's text is addressed to them), so a refused recipient is that
notification's failure; if a relay returns a partial refusal without raising, the refused address is read
from the per-recipient answers all the same. Failure details are French (they are published as the detail
of a reason) and quote the relay's replies, never the message.

The caller may pass `proceed`: it is awaited once the TLS session is up and right before the mail
transaction starts (MAIL FROM), so that a withdrawal recorded while connecting still stops the e-mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from email.message import EmailMessage
from typing import Final

import aiosmtplib
from proxymage_shared.errors import describe

from expert_notifier.domain import SendFailure
from expert_notifier.ports import Proceed, SmtpSendError
from expert_notifier.settings import SmtpEndpoint

MAX_REPLY: Final = 300
CONFIGURATION_CODES: Final = frozenset({530, 538})  # "must issue STARTTLS first", "encryption required"
STARTTLS_NOT_OFFERED: Final = SendFailure(
    "configuration", "le relais de messagerie sécurisée ne propose pas STARTTLS : non envoyé"
)


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"[:MAX_REPLY]


def _ssl_cause(error: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _by_code(code: int, message: str, what: str) -> SendFailure:
    reply = _reply(code, message)
    if code in CONFIGURATION_CODES:
        return SendFailure("configuration", f"{what} : le relais exige TLS, {reply}")
    if 400 <= code < 500:
        return SendFailure("transient", f"{what} : le relais a répondu {reply}")
    return SendFailure("permanent", f"{what} : refus du relais, {reply}")


def classify(error: BaseException) -> SendFailure:
    """The kind of an SMTP failure and a reason for users (server replies, never message content)."""
    if isinstance(error, SmtpSendError):
        return error.failure
    tls = _ssl_cause(error)
    if tls is not None:
        detail = getattr(tls, "reason", None) or type(tls).__name__
        if isinstance(tls, ssl.SSLCertVerificationError):
            detail = f"certificat du relais non reconnu ({tls.verify_message})"
        return SendFailure("configuration", f"échec TLS avec le relais de messagerie sécurisée : {detail}")
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        refusals = [(r.code, r.message) for r in error.recipients]
        code, message = refusals[0] if refusals else (550, "recipient refused")
        return _by_code(code, message, "destinataire")
    if isinstance(error, aiosmtplib.SMTPSenderRefused):
        return _by_code(error.code, error.message, "expéditeur")
    if isinstance(error, aiosmtplib.SMTPDataError):
        return _by_code(error.code, error.message, "message")
    if isinstance(error, aiosmtplib.SMTPConnectResponseError):
        return _by_code(error.code, error.message, "connexion")
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return _by_code(error.code, error.message, "commande")
    if isinstance(error, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPConnectTimeoutError | TimeoutError):
        return SendFailure("transient", "le relais de messagerie sécurisée n'a pas répondu à temps")
    if isinstance(error, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | ConnectionError):
        # `describe`, not the message: a library's message may quote anything (errors.describe).
        return SendFailure("transient", f"relais de messagerie sécurisée injoignable ({describe(error)})")
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        return STARTTLS_NOT_OFFERED
    if isinstance(error, OSError):
        return SendFailure(
            "transient", f"erreur réseau avec le relais de messagerie sécurisée ({type(error).__name__})"
        )
    return SendFailure("transient", f"erreur inattendue pendant l'envoi ({type(error).__name__})")


async def _connect_tls(client: aiosmtplib.SMTP) -> None:
    """Connects and upgrades to TLS, as aiosmtplib's `start_tls=True` would, but tells a relay that does not offer
    STARTTLS by what its EHLO answered (aiosmtplib reports it by a bare SMTPException and a sentence)."""
    await client.connect()
    try:
        await client.starttls()
    except aiosmtplib.SMTPException:
        if client.is_connected and not client.is_ehlo_or_helo_needed and not client.supports_extension("starttls"):
            raise SmtpSendError(STARTTLS_NOT_OFFERED) from None
        raise


def tls_context(endpoint: SmtpEndpoint) -> ssl.SSLContext:
    """Verifies the relay against `ca_file` (or the system CAs), offers the client certificate, TLS 1.2+."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(endpoint.ca_file) if endpoint.ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if endpoint.client_cert_file is not None:
        context.load_cert_chain(
            str(endpoint.client_cert_file), str(endpoint.client_key_file) if endpoint.client_key_file else None
        )
    return context


class SmtpSender:
    def __init__(self, endpoint: SmtpEndpoint) -> None:
        self._endpoint = endpoint

    def _client(self) -> aiosmtplib.SMTP:
        try:
            context = tls_context(self._endpoint)
        except (OSError, ssl.SSLError) as error:
            raise SmtpSendError(
                SendFailure(
                    "configuration",
                    f"certificat TLS, clé ou autorité de certification inutilisable ({type(error).__name__})",
                )
            ) from error
        return aiosmtplib.SMTP(
            hostname=self._endpoint.host,
            port=self._endpoint.port,
            start_tls=False,  # `_connect_tls`: required, never optional
            tls_context=context,
            timeout=self._endpoint.command_timeout_seconds,
            # Not aiosmtplib's default (socket.getfqdn(): a DNS lookup on every connection).
            local_hostname=self._endpoint.helo_name or socket.gethostname(),
        )

    async def send(self, message: EmailMessage, *, sender: str, recipient: str, proceed: Proceed | None = None) -> bool:
        """Sends `message` to `recipient` only; True once the relay accepted it, False when `proceed` said no
        (nothing was transmitted); raises `SmtpSendError` (classified) for any failure.

        Once DATA got its 250 the message is the relay's: nothing after that (QUIT failing, the deadline
        passing) may turn it into a failure, or it would be sent again. An error of `proceed` itself is not
        the relay's: it propagates unclassified.
        """
        client = self._client()
        try:
            try:
                async with asyncio.timeout(self._endpoint.message_timeout_seconds):
                    try:
                        await _connect_tls(client)
                        # The first command after STARTTLS is where a TLS 1.3 relay reports a refused client
                        # certificate: sent now, the failure is classified as TLS, not as a lost connection
                        # after `proceed` took its time.
                        await client.noop()
                    except Exception as error:
                        raise SmtpSendError(classify(error)) from error
                    if proceed is not None and not await proceed():
                        with contextlib.suppress(Exception):
                            await client.quit()
                        return False
                    try:
                        refused, _ = await client.send_message(message, sender=sender, recipients=[recipient])
                    except Exception as error:
                        raise SmtpSendError(classify(error)) from error
            except TimeoutError as error:
                raise SmtpSendError(classify(error)) from error
            if refused:
                code, text = next(iter(refused.values()))
                raise SmtpSendError(_by_code(code, text, "destinataire"))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._endpoint.command_timeout_seconds):
                    await client.quit()
            return True
        finally:
            client.close()

    async def probe(self) -> bool:
        """Readiness: connect, EHLO, STARTTLS with our certificate, NOOP (the first command the relay checks
        the certificate on), QUIT."""
        client = self._client()
        try:
            await _connect_tls(client)
            await client.noop()
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.quit()
        finally:
            client.close()
        return True
