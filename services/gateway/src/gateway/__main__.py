"""`python -m gateway` / `proxymage-gateway`: runs the gateway service until SIGTERM."""

from __future__ import annotations

from proxymage_shared.service import main as run

from gateway.app import build
from gateway.settings import Settings


def main() -> None:
    run(build, Settings)


if __name__ == "__main__":
    main()
