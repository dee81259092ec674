"""Which e-mail addresses belong to the secure health messaging (MSSanté): one rule, two places (pure).

MSSanté is a closed space: a message to an address outside it would leave the secure-mail system. The
gateway refuses such an expert's address at entry (`PUT /api/v1/meetings/{id}/experts`, 422) and the
expert-notifier refuses to mail it (an address may also come straight from the DCC over Kafka). Both read the
allowed domains from the same setting, `PROXYMAGE_SMTP__ALLOWED_DOMAINS` (`SecureMailDomains`). Patterns:

| pattern        | matches                            | does not match                                     |
|----------------|------------------------------------|----------------------------------------------------|
| `*.mssante.fr` | `chu.mssante.fr`, `a.b.mssante.fr` | `mssante.fr`, `xmssante.fr`, `mssante.fr.evil.com` |
| `mssante.fr`   | `mssante.fr`                       | `chu.mssante.fr`                                   |

Comparison is case-insensitive on the part after the `@`, with a trailing dot ignored. Anything that is
not a plain `local@domain` address is not allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from pydantic import BaseModel, Field

# Production: MSSanté's operators' domains are all sub-domains of mssante.fr.
DEFAULT_ALLOWED_DOMAINS: Final[tuple[str, ...]] = ("*.mssante.fr",)


class SecureMailDomains(BaseModel):
    """The `smtp` settings' part every service that handles experts' addresses reads (`PROXYMAGE_SMTP__…`)."""

    # Recipient domains mail may go to. `*.example.fr` = any subdomain of example.fr (at any depth), not
    # example.fr itself; an entry without `*.` matches that exact domain. Compared case-insensitively.
    allowed_domains: tuple[str, ...] = Field(default=DEFAULT_ALLOWED_DOMAINS, min_length=1)


# Unicode's White_Space property (what pydantic's `\s` refuses in the contract's EmailAddress).
_WHITE_SPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)


def recipient_domain(address: str) -> str | None:
    # Unicode's White_Space only: Python's strip() also removes U+001C-U+001F, which the contract admits (the rule
    # and the documented pattern would then disagree).
    local, at, domain = address.strip(_WHITE_SPACE).rpartition("@")
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


def _any_case(text: str) -> str:
    """`Fr.` -> `[fF][rR]\\.`: JSON Schema's regular expressions (ECMA-262) have no case-insensitive flag."""
    return "".join(f"[{char.lower()}{char.upper()}]" if char.isalpha() else re.escape(char) for char in text)


# The `\s` the contract's EmailAddress pattern refuses, as pydantic's regex engine (Rust's) reads it: Unicode's
# White_Space, spelled out because ECMA-262's `\s` (JSON Schema's) adds U+FEFF and Python's adds U+001C-U+001F.
_SPACES: Final = r"\t\n\x0b\x0c\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def address_pattern(patterns: Iterable[str], excluded: str = _SPACES) -> str:
    """The rule as a regular expression for an OpenAPI document, the same in Python and ECMA-262: what it matches
    is what the contract's EmailAddress type (pydantic) admits and `address_allowed` allows.

    `excluded`: the body of a character class no part of the address may contain besides `@`, `<`, `>` (a
    reader that refuses more characters than the contract, e.g. control characters, passes its own set)."""
    local = rf"[^@<>{excluded}]+"
    label = rf"[^@<>.{excluded}]+"
    domains = []
    for raw in patterns:
        pattern = raw.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            domains.append(rf"(?:{label}\.)+" + _any_case(pattern[2:]))
        elif "." in pattern:  # a domain of one label is no address's (recipient_domain)
            domains.append(_any_case(pattern))
    return rf"^{local}@(?:" + "|".join(domains or ["(?!)"]) + r")\.*$"
