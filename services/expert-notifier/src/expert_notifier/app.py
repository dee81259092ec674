"""Composition root of the expert-notifier service: settings, adapters, subscribers, lifespan.

Sends expertise e-mails over SMTP with STARTTLS and a client certificate (handlers: issue 5).
"""

from __future__ import annotations

import asyncio

from proxymage_shared.service import Service, build_service

from expert_notifier.settings import Settings


def build(settings: Settings) -> Service:
    async def smtp_reachable() -> bool:
        _, writer = await asyncio.open_connection(settings.smtp.host, settings.smtp.port)
        writer.close()
        await writer.wait_closed()
        return True

    return build_service(settings, readiness_checks={"smtp": smtp_reachable})
