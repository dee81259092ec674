"""The SMTP adapter against an in-process relay (loopback, no deploy/local server) that does not offer STARTTLS:
told by what its EHLO answered, never by the words of aiosmtplib's error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest
from expert_notifier.ports import SmtpSendError
from expert_notifier.settings import SmtpEndpoint
from expert_notifier.smtp import STARTTLS_NOT_OFFERED, SmtpSender


@pytest.fixture
async def clear_text_relay() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A relay that speaks ESMTP without STARTTLS; yields its port and the commands it received."""
    commands: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.test ESMTP\r\n")
        while line := await reader.readline():
            commands.append(line.strip())
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-relay.test\r\n250 8BITMIME\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], commands


async def test_a_relay_without_starttls_is_a_configuration_failure_and_gets_nothing(
    clear_text_relay: tuple[int, list[bytes]],
) -> None:
    port, commands = clear_text_relay
    sender = SmtpSender(SmtpEndpoint(host="127.0.0.1", port=port, command_timeout_seconds=5))
    message = EmailMessage()
    message["Subject"] = "x"
    message.set_content("x")
    with pytest.raises(SmtpSendError) as raised:
        await sender.send(message, sender="proxymage@test.invalid", recipient="ana@chu.mssante.fr")
    assert raised.value.failure == STARTTLS_NOT_OFFERED
    assert [command.split()[0].upper() for command in commands] == [b"EHLO"]  # no MAIL, no data in clear
    with pytest.raises(SmtpSendError):
        await sender.probe()
