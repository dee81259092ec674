"""The operator console of the gateway (issue 6, point 7): the screens of the user guide §4–§7, in French.

Server-rendered HTML (Jinja2, autoescaped) plus one small vanilla script; no build step, nothing fetched from
the internet. The pages hold no patient data: the script reads the gateway's JSON API (`/api/v1/...`) and
listens to its SSE streams, authenticated by the HttpOnly cookie set at login, and writes every value with
`textContent`, so data from the DCC is never interpreted as HTML.

`mount(app)` adds the routes; call it before anything mounted at `/` (a catch-all mount would hide them).
"""

from __future__ import annotations

from gateway.auth import COOKIE_NAME
from gateway.console.pages import ConsoleOptions, mount

__all__ = ["COOKIE_NAME", "ConsoleOptions", "mount"]
