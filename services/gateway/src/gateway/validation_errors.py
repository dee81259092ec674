"""The 422 answer of invalid input, without echoing the input back.

FastAPI's default 422 repeats every refused value (`input`), up to the whole body: a patient's names, birth
date or an expert's address would travel back and land in the caller's logs. Here each error keeps `loc`,
`msg`, `type` and `ctx` (the rule: pattern, bounds, expected values), and `input` only when it cannot be
personal data: a number or a boolean, or a path, query or header value cut to a short excerpt. Strings,
objects and lists of a body are never echoed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

EXCERPT_CHARS: Final = 40
_PARAMETER_LOCATIONS: Final = frozenset({"path", "query", "header", "cookie"})
_KEPT_FIELDS: Final = ("type", "loc", "msg", "ctx")


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _echoed_input(location: str, value: Any) -> tuple[bool, Any]:
    """Whether the error may carry its input, and what of it."""
    if isinstance(value, bool | int | float) or value is None:
        return True, value
    if location in _PARAMETER_LOCATIONS and isinstance(value, str):
        return location != "cookie", excerpt(value)
    return False, None


def redacted(error: Mapping[str, Any]) -> dict[str, Any]:
    """One error as answered: the rule and where, and at most a short, non-personal excerpt of the input."""
    answer = {name: error[name] for name in _KEPT_FIELDS if name in error}
    location = error.get("loc") or ("",)
    if "input" in error:
        keep, value = _echoed_input(str(location[0]), error["input"])
        if keep:
            answer["input"] = value
    return answer


def redacted_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [redacted(error) for error in errors]


async def validation_error(_: Request, error: Exception) -> JSONResponse:
    """The handler of `RequestValidationError`: 422 `{"detail": [...]}`, inputs redacted."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": jsonable_encoder(redacted_errors(error.errors()))}, status_code=422)
