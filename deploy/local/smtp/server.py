"""Local SMTP server standing in for French secure health mail (MSSanté) in tests and the demo.

Like an MSSanté operator's relay for application mailboxes, it authenticates clients by their TLS
certificate, not by AUTH:

* it advertises and requires STARTTLS: MAIL/RCPT/DATA before TLS get ``530 Must issue a STARTTLS
  command first`` (aiosmtpd's ``require_starttls``);
* the TLS context (TLS 1.2 minimum) requires a client certificate issued by the test CA
  (``certs/ca.pem``, the only trusted CA): without one, or with one from another CA, the handshake
  fails and the connection is closed. As a second line of defence every MAIL/RCPT/DATA checks that
  the session carries a verified client certificate, so even a misconfigured context
  (CERT_OPTIONAL...) could not let an unauthenticated client reach DATA;
* AUTH is not advertised (the certificate is the authentication), SMTPUTF8 is not offered (a client
  must encode non-ASCII headers, as it must for real relays that do not offer it), 8BITMIME is.

Layout of ``--dir`` (default ``$PROXYMAGE_LOCAL_SMTP_DIR``, i.e. ``var/smtp``):

* ``certs/``: ca.pem, server.pem, server.key (made by deploy/local/smtp/certs.sh);
* ``mailbox/``: one accepted message = ``<UTC timestamp>-<n>.eml`` (the message bytes exactly as
  received after DATA, dot-unstuffed, line endings as sent, nothing added) plus ``<same name>.json``:
  ``{"eml", "received_at", "peer", "helo", "mail_from", "mail_options", "rcpt_tos" (accepted
  recipients only), "size", "tls_version", "tls_cipher", "client_cert": {"subject", "issuer",
  "serial", "not_after", "sha256"}}`` with subject/issuer as ``O=...,CN=...``. The .json is renamed
  into place before the .eml, each from a temporary ``.*.tmp`` name: a reader that sees ``X.eml``
  can read both files whole. Timestamps sort chronologically (``20260131T120000.123456Z-000001``);
* ``script.json``: optional failure script, re-read on every RCPT/DATA (see ``FailureScript``).

Logs one line per connection event / transaction to stderr, never message bodies. SIGTERM/SIGINT
stop it cleanly. Run: ``python deploy/local/smtp/server.py [--host H] [--port P] [--dir D]``.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto as sslproto
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException, syntax

log = logging.getLogger("proxymage.smtp")

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVER_HOSTNAME = "localhost"  # matches the server certificate; avoids socket.getfqdn() (DNS) per connection
IDENT = "Proxymage test SMTP (MSSante stand-in)"

# getpeercert() attribute names -> RFC 4514 short names, for readable subjects.
_RDN_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "emailAddress": "emailAddress",
}


# --------------------------------------------------------------------------------------------
# Failure script
# --------------------------------------------------------------------------------------------

_REPLY_RE = re.compile(r"^[45][0-9][0-9]( [^\r\n]*)?$")
_STAGES = ("rcpt", "data")


class ScriptError(ValueError):
    """script.json exists but cannot be used."""


@dataclass(frozen=True)
class Rule:
    """One scripted answer: for addresses containing ``match`` (case-insensitive), answer ``codes``
    to the first len(codes) attempts and then accept; or answer ``always`` to every attempt."""

    match: str
    codes: tuple[str, ...] = ()
    always: str | None = None


class FailureScript:
    """Scripted SMTP failures, driven by a JSON file that tests write.

    Format (both keys optional; rules are tried in order, the first whose ``match`` is a
    case-insensitive substring of the address applies)::

        {
          "rcpt": [
            {"match": "fail451@", "codes": ["451 4.3.0 try later", "451 4.3.0 try later"]},
            {"match": "unknown@", "always": "550 5.1.1 user unknown"}
          ],
          "data": [
            {"match": "datafail@", "codes": ["452 4.3.1 insufficient storage"]}
          ]
        }

    * ``rcpt`` rules answer RCPT TO for that recipient (the recipient is then not part of the
      envelope); ``data`` rules answer the end of DATA (nothing is stored) and are matched against
      each envelope recipient in turn, the first match deciding.
    * ``codes``: the replies to the 1st, 2nd, ... attempt; once used up, the normal 250.
      ``always``: the reply to every attempt. A rule has exactly one of the two. Replies are
      ``"4xx ..."`` or ``"5xx ..."`` single lines. A 421 does not close the connection.
    * Attempts are counted per (stage, rule, recipient address): a test that wants independent
      counters uses distinct recipients (``fail451+<uuid>@...`` with ``"match": "fail451"``).
      Counters reset whenever the file is replaced or modified (inode, mtime or size change)
      or deleted.
    * Write the file atomically (temporary file + os.replace): it is re-read on every RCPT/DATA.
      An unreadable or invalid file answers ``451 4.3.5 ...`` to every RCPT/DATA, loudly, rather
      than silently accepting.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._rules: dict[str, list[Rule]] = {}
        self._error: str | None = None
        self._attempts: dict[tuple[str, int, str], int] = {}

    def _refresh(self) -> None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            if self._stamp is not None or self._error is not None:
                log.info("script: %s removed, no scripted failures", self._path.name)
            self._stamp, self._rules, self._error, self._attempts = None, {}, None, {}
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp, self._attempts = stamp, {}
        try:
            self._rules, self._error = _parse_script(self._path.read_text(encoding="utf-8")), None
            log.info("script: loaded %s: %s", self._path.name, _describe(self._rules))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ScriptError) as exc:
            self._rules, self._error = {}, f"{type(exc).__name__}: {exc}"
            log.error("script: %s is invalid, answering 451 to RCPT/DATA: %s", self._path, self._error)

    def answer(self, stage: str, addresses: list[str]) -> str | None:
        """The scripted reply for this attempt, or None to proceed normally."""
        self._refresh()
        if self._error is not None:
            return f"451 4.3.5 proxymage test server: invalid {self._path.name} ({self._error})"[:500]
        for address in addresses:
            for index, rule in enumerate(self._rules.get(stage, [])):
                if rule.match.lower() not in address.lower():
                    continue
                if rule.always is not None:
                    return rule.always
                key = (stage, index, address.lower())
                attempt = self._attempts.get(key, 0)
                self._attempts[key] = attempt + 1
                return rule.codes[attempt] if attempt < len(rule.codes) else None
        return None


def _parse_script(text: str) -> dict[str, list[Rule]]:
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ScriptError("top level must be an object")
    unknown = set(raw) - set(_STAGES)
    if unknown:
        raise ScriptError(f"unknown keys {sorted(unknown)} (allowed: {list(_STAGES)})")
    rules: dict[str, list[Rule]] = {}
    for stage in _STAGES:
        entries = raw.get(stage, [])
        if not isinstance(entries, list):
            raise ScriptError(f"{stage!r} must be a list of rules")
        rules[stage] = [_parse_rule(stage, i, entry) for i, entry in enumerate(entries)]
    return rules


def _parse_rule(stage: str, index: int, entry: Any) -> Rule:
    where = f"{stage}[{index}]"
    if not isinstance(entry, dict) or set(entry) - {"match", "codes", "always"}:
        raise ScriptError(f"{where}: an object with 'match' and one of 'codes' / 'always'")
    match = entry.get("match")
    if not isinstance(match, str) or not match:
        raise ScriptError(f"{where}: 'match' must be a non-empty string")
    if ("codes" in entry) == ("always" in entry):
        raise ScriptError(f"{where}: exactly one of 'codes' and 'always'")
    if "codes" in entry:
        codes, always = entry["codes"], None
        if not isinstance(codes, list) or not codes:
            raise ScriptError(f"{where}: 'codes' must be a non-empty list of replies")
        replies = codes
    else:
        codes, always = [], entry["always"]
        replies = [always]
    for reply in replies:
        if not isinstance(reply, str) or not _REPLY_RE.match(reply):
            raise ScriptError(f"{where}: {reply!r} is not a one-line 4xx/5xx reply such as '451 4.3.0 try later'")
    return Rule(match=match, codes=tuple(codes), always=always)


def _describe(rules: dict[str, list[Rule]]) -> str:
    parts = [
        f"{stage} {r.match!r} -> "
        + (f"always {r.always!r}" if r.always is not None else f"{len(r.codes)} x {list(r.codes)}")
        for stage, stage_rules in rules.items()
        for r in stage_rules
    ]
    return "; ".join(parts) or "no rules"


# --------------------------------------------------------------------------------------------
# TLS helpers
# --------------------------------------------------------------------------------------------


def make_tls_context(certs: Path) -> ssl.SSLContext:
    """Server context: TLS 1.2+, our server certificate, client certificate required and verified
    against the test CA only (no system CAs: a certificate from any other CA must fail)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certs / "server.pem", certs / "server.key")
    ctx.load_verify_locations(cafile=certs / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _rdn_string(rdns: Any) -> str:
    """getpeercert()'s subject/issuer (tuple of RDNs of (name, value) pairs) as 'O=...,CN=...'."""
    return ",".join(f"{_RDN_SHORT.get(name, name)}={value}" for rdn in rdns or () for name, value in rdn)


def verified_peer_cert(session: Session | None) -> dict[str, Any] | None:
    """The client certificate of a TLS session if the TLS layer verified it, else None.

    getpeercert() returns {} for an unverified certificate and None for no certificate, so an
    empty/None value means "not authenticated" whatever the context's verify_mode."""
    if session is None or session.ssl is None:
        return None
    cert = session.ssl.get("peercert")
    return cert if isinstance(cert, dict) and cert.get("subject") else None


def _cert_facts(session: Session) -> dict[str, Any]:
    assert session.ssl is not None
    cert = verified_peer_cert(session) or {}
    ssl_object = session.ssl.get("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    cipher = session.ssl.get("cipher")
    return {
        "tls_version": ssl_object.version() if ssl_object is not None else None,
        "tls_cipher": cipher[0] if cipher else None,
        "client_cert": {
            "subject": _rdn_string(cert.get("subject")),
            "issuer": _rdn_string(cert.get("issuer")),
            "serial": cert.get("serialNumber"),
            "not_after": cert.get("notAfter"),
            "sha256": hashlib.sha256(der).hexdigest() if der else None,
        },
    }


def _peer(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


# --------------------------------------------------------------------------------------------
# SMTP protocol and handler
# --------------------------------------------------------------------------------------------


class _AlertingSSLProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS layer, but one that sends the TLS alert of a failed handshake.

    asyncio (3.11) closes the transport as soon as the handshake fails, without writing the alert
    OpenSSL queued ("certificate required", "unknown ca"...): the client sees a bare connection
    reset. Real relays send the alert, and clients report it (ssl.SSLError naming the alert):
    flush it first, so that clients under test see what they would see in production."""

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()  # type: ignore[attr-defined]  # private asyncio API
        super()._on_handshake_complete(handshake_exc)


class ProxymageSMTP(SMTP):
    """aiosmtpd's SMTP with connection open/close log lines and TLS alerts on handshake failures."""

    _pm_opened = False
    _pm_closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called twice: for the TCP connection, then for the TLS layer after STARTTLS.
        super().connection_made(transport)
        if not self._pm_opened:
            self._pm_opened = True
            log.info("%s connected", _peer(self.session))

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802 (aiosmtpd command name)
        # aiosmtpd 1.4.6's smtp_STARTTLS, verbatim but for the TLS protocol class (recheck this copy
        # if aiosmtpd is upgraded: connection_made/connection_lost rely on the same private fields).
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context:
            await self.push("454 TLS not available")
            return
        await self.push("220 Ready to start TLS")
        waiter = self.loop.create_future()
        self._tls_protocol = _AlertingSSLProtocol(self.loop, self, self.tls_context, waiter, server_side=True)
        self._original_transport = self.transport
        assert self._original_transport is not None
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error

    def connection_lost(self, error: Exception | None) -> None:
        # aiosmtpd calls this itself after a failed TLS handshake; log once.
        if not self._pm_closed:
            self._pm_closed = True
            log.info("%s disconnected%s", _peer(self.session), f" ({error!r})" if error else "")
        super().connection_lost(error)


class MailboxHandler:
    """aiosmtpd handler: enforces the client certificate, applies the failure script, stores mail."""

    def __init__(self, mailbox: Path, script: FailureScript) -> None:
        self._mailbox = mailbox
        self._script = script
        self._counter = itertools.count(1)

    # Synchronous: aiosmtpd calls this hook without awaiting it. Returning False makes aiosmtpd
    # answer "554 Command refused due to lack of security" to everything but QUIT.
    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:  # noqa: N802 (aiosmtpd hook name)
        cert = verified_peer_cert(session)
        if cert is None:
            log.warning("%s TLS up without a verified client certificate: refusing all commands", _peer(session))
            return False
        facts = _cert_facts(session)
        log.info(
            "%s TLS %s %s client %s (issuer %s)",
            _peer(session),
            facts["tls_version"],
            facts["tls_cipher"],
            facts["client_cert"]["subject"],
            facts["client_cert"]["issuer"],
        )
        return True

    async def handle_EHLO(  # noqa: N802 (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # The client certificate is the authentication: do not advertise AUTH (aiosmtpd would offer
        # LOGIN/PLAIN after STARTTLS, backed by a callback that always fails).
        session.host_name = hostname
        return [r for r in responses if not r[4:].upper().startswith("AUTH")]

    async def handle_MAIL(  # noqa: N802 (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if verified_peer_cert(session) is None:
            return "530 5.7.0 Must issue a STARTTLS command first (client certificate required)"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802 (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if verified_peer_cert(session) is None:
            return "530 5.7.0 Must issue a STARTTLS command first (client certificate required)"
        scripted = self._script.answer("rcpt", [address])
        if scripted is not None:
            log.info("%s RCPT <%s> -> %s (script)", _peer(session), address, scripted)
            return scripted
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd hook name)
        if verified_peer_cert(session) is None:
            return "530 5.7.0 Must issue a STARTTLS command first (client certificate required)"
        rcpts = list(envelope.rcpt_tos)
        size = len(envelope.original_content or b"")
        scripted = self._script.answer("data", rcpts)
        if scripted is not None:
            log.info(
                "%s message from <%s> to %s -> %s (script, not stored)",
                _peer(session),
                envelope.mail_from,
                rcpts,
                scripted,
            )
            return scripted
        name = self._store(session, envelope)
        log.info(
            "%s message from <%s> to %s, %d bytes -> stored %s", _peer(session), envelope.mail_from, rcpts, size, name
        )
        return f"250 2.0.0 OK queued as {name}"

    async def handle_exception(self, error: Exception) -> str:
        # A failed TLS handshake arrives here as aiosmtpd's TLSSetupException wrapping the SSLError
        # (no certificate, unknown CA...); aiosmtpd then closes the connection and ignores our reply.
        cause = error.__cause__ or error
        if isinstance(error, TLSSetupException):
            log.warning("TLS handshake failed: %s", cause)
        else:
            log.error("error in SMTP session: %r", error, exc_info=error)
        # Anything else (disk full while storing...) is transient from the client's point of view.
        return "451 4.3.0 proxymage test server: internal error"

    def _store(self, session: Session, envelope: Envelope) -> str:
        """Write <ts>-<n>.json then <ts>-<n>.eml, each atomically; returns the .eml name."""
        now = dt.datetime.now(dt.UTC)
        base = f"{now:%Y%m%dT%H%M%S.%fZ}-{next(self._counter):06d}"
        content: bytes = envelope.original_content or b""
        sidecar = {
            "eml": f"{base}.eml",
            "received_at": now.isoformat(),
            "peer": _peer(session),
            "helo": session.host_name,
            "mail_from": envelope.mail_from,
            "mail_options": list(envelope.mail_options),
            "rcpt_tos": list(envelope.rcpt_tos),
            "size": len(content),
            **_cert_facts(session),
        }
        _atomic_write(
            self._mailbox / f"{base}.json", (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode()
        )
        _atomic_write(self._mailbox / f"{base}.eml", content)
        return f"{base}.eml"


def _atomic_write(path: Path, data: bytes) -> None:
    # The temporary name starts with "." and ends with ".tmp", so globs for *.eml / *.json never see
    # it; os.replace within one directory is atomic.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


class _DropVerifyModeWarning(logging.Filter):
    # aiosmtpd warns on every connection that CERT_REQUIRED "might cause client connection problems":
    # that refusal is exactly what we want.
    def filter(self, record: logging.LogRecord) -> bool:
        return "verify_mode not in" not in record.getMessage()


async def serve(host: str, port: int, smtp_dir: Path) -> None:
    certs, mailbox = smtp_dir / "certs", smtp_dir / "mailbox"
    mailbox.mkdir(parents=True, exist_ok=True)
    tls_context = make_tls_context(certs)
    handler = MailboxHandler(mailbox, FailureScript(smtp_dir / "script.json"))
    loop = asyncio.get_running_loop()

    def factory() -> ProxymageSMTP:
        return ProxymageSMTP(
            handler,
            hostname=SERVER_HOSTNAME,
            ident=IDENT,
            tls_context=tls_context,
            require_starttls=True,
            loop=loop,
        )

    server = await loop.create_server(factory, host=host, port=port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "listening on %s:%d (STARTTLS + client certificate from %s), mailbox %s", host, port, certs / "ca.pem", mailbox
    )
    await stop.wait()
    log.info("stopping")
    server.close()
    await server.wait_closed()
    # asyncio.run() then cancels the sessions still open; a message is either fully stored or not at all.


def main(argv: list[str] | None = None) -> None:
    default_dir = REPO_ROOT / os.environ.get("PROXYMAGE_LOCAL_SMTP_DIR", "var/smtp")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=os.environ.get("PROXYMAGE_SMTP__HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PROXYMAGE_SMTP__PORT", "10587")))
    parser.add_argument(
        "--dir", type=Path, default=default_dir, help="certs/, mailbox/, script.json (default %(default)s)"
    )
    args = parser.parse_args(argv)

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiosmtpd's own INFO lines ("Peer: ...", "sender: ...") duplicate ours.
    mail_log = logging.getLogger("mail.log")
    mail_log.setLevel(logging.WARNING)
    mail_log.addFilter(_DropVerifyModeWarning())
    asyncio.run(serve(args.host, args.port, args.dir.resolve()))


if __name__ == "__main__":
    main()
