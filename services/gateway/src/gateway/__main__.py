"""`python -m gateway` / `proxymage-gateway`: runs the gateway service until SIGTERM."""

from __future__ import annotations

import asyncio

from proxymage_shared.logging import configure_logging
from proxymage_shared.service import run_service
from proxymage_shared.settings import load_settings

from gateway.app import build
from gateway.settings import Settings


def main() -> None:
    settings = load_settings(Settings)
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    asyncio.run(run_service(build(settings)))


if __name__ == "__main__":
    main()
