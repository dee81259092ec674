"""Value types of the REST bodies whose JSON Schema must say exactly what the server accepts, whatever the
regular-expression dialect of the reader (`/openapi.json` is read by ECMAScript, Rust and Python engines).

- `WholeNumber`: JSON Schema's `integer` includes `6.0`; it is accepted as 6 (strings and booleans are not).
- `ExpertEmail`: the contract's e-mail shape (`proxymage_shared.events.EmailAddress`, `[^@\\s<>]`) with the
  excluded characters spelled out: `\\s` is not the same set in every dialect (U+0085 and U+001C-U+001F are
  spaces for Python and Rust, not for ECMAScript). Control characters are excluded too. Every value it accepts
  is accepted by the contract's pattern.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BeforeValidator, StringConstraints


def _whole_number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("expected a whole number")


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


def _escaped(code: int) -> str:
    return f"\\u{code:04x}"


def _excluded_spans() -> str:
    """`@`, `<`, `>`, control characters and every character some dialect counts as a space (all in the BMP:
    astral characters stay allowed, as in the contract's pattern)."""
    codes = sorted(
        code for code in range(0x10000) if chr(code).isspace() or code < 0x20 or 0x7F <= code <= 0x9F or code == 0xFEFF
    )
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return "".join(_escaped(low) if low == high else f"{_escaped(low)}-{_escaped(high)}" for low, high in ranges)


# The characters no part of an expert's address may hold besides `@`, `<`, `>` (a character class's body).
EXCLUDED_IN_EMAIL: Final = _excluded_spans()
_PART: Final = f"[^@<>{EXCLUDED_IN_EMAIL}]"
EMAIL_PATTERN: Final = f"^{_PART}+@{_PART}+\\.{_PART}+$"
ExpertEmail = Annotated[str, StringConstraints(pattern=EMAIL_PATTERN, max_length=254)]
