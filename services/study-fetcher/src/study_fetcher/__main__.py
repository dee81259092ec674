"""`python -m study_fetcher` / `proxymage-study-fetcher`: runs the study-fetcher service until SIGTERM."""

from __future__ import annotations

from proxymage_shared.service import main as run

from study_fetcher.app import build
from study_fetcher.settings import Settings


def main() -> None:
    run(build, Settings)


if __name__ == "__main__":
    main()
