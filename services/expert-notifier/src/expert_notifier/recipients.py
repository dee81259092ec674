"""Which recipient domains the notifier may mail (pure).

MSSanté is a closed space: a message to an address outside it would leave the secure-mail system, so
recipients are checked before anything is sent. Patterns:

| pattern        | matches                            | does not match                                     |
|----------------|------------------------------------|----------------------------------------------------|
| `*.mssante.fr` | `chu.mssante.fr`, `a.b.mssante.fr` | `mssante.fr`, `xmssante.fr`, `mssante.fr.evil.com` |
| `mssante.fr`   | `mssante.fr`                       | `chu.mssante.fr`                                   |

Comparison is case-insensitive on the part after the `@`, with a trailing dot ignored. Anything that is
not a plain `local@domain` address is not allowed.
"""

from __future__ import annotations

from collections.abc import Iterable


def recipient_domain(address: str) -> str | None:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain or "@" in local:
        return None
    domain = domain.lower().rstrip(".")
    labels = domain.split(".")
    if len(labels) < 2 or any(not label for label in labels):
        return None
    return domain


def domain_allowed(domain: str, patterns: Iterable[str]) -> bool:
    domain = domain.lower().rstrip(".")
    for raw in patterns:
        pattern = raw.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            if domain.endswith(pattern[1:]) and len(domain) > len(pattern) - 1:
                return True
        elif pattern and domain == pattern:
            return True
    return False


def address_allowed(address: str, patterns: Iterable[str]) -> bool:
    domain = recipient_domain(address)
    return domain is not None and domain_allowed(domain, patterns)
