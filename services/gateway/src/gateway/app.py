"""Composition root of the gateway service: settings, adapters, subscribers, lifespan.

Projects outcome topics into the read model and serves REST/SSE (issue 6).
"""

from __future__ import annotations

from proxymage_shared.service import Service, build_service

from gateway.settings import Settings


def build(settings: Settings) -> Service:
    return build_service(settings)
