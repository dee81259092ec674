"""`python -m expert_notifier` / `proxymage-expert-notifier`: runs the expert-notifier service until SIGTERM."""

from __future__ import annotations

from proxymage_shared.service import main as run

from expert_notifier.app import build
from expert_notifier.settings import Settings


def main() -> None:
    run(build, Settings)


if __name__ == "__main__":
    main()
