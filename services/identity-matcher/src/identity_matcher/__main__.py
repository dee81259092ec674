"""`python -m identity_matcher` / `proxymage-identity-matcher`: runs the identity-matcher service until SIGTERM."""

from __future__ import annotations

from proxymage_shared.service import main as run

from identity_matcher.app import build
from identity_matcher.settings import Settings


def main() -> None:
    run(build, Settings)


if __name__ == "__main__":
    main()
