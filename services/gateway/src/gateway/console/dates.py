"""Dates as the console shows them: JJ/MM/AAAA whatever the browser's language (pure). The page script has the
same rule for what it shows and reads (console.js `frDate` / `isoFromFr`); the API speaks ISO (YYYY-MM-DD)."""

from __future__ import annotations

import datetime as dt


def fr_date(iso: str) -> str:
    """`2023-03-22` -> `22/03/2023`; anything that is not an ISO date is shown as it came (already JJ/MM/AAAA,
    or a mistake the script will point out)."""
    try:
        return dt.date.fromisoformat(iso.strip()).strftime("%d/%m/%Y")
    except ValueError:
        return iso
