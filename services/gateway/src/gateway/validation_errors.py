"""The 422 answer of invalid input, without echoing the input back.

FastAPI's default 422 repeats every refused value (`input`), up to the whole body: a patient's names, birth
date or an expert's address would travel back and land in the caller's logs. Here each error keeps `loc`,
`msg`, `type` and `ctx` (the rule: pattern, bounds, expected values), and `input` only when it cannot be
personal data: a (short) number or a boolean, or a path, query or header value cut to a short excerpt. Strings,
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
MESSAGE_CHARS: Final = 200
_PARAMETER_LOCATIONS: Final = frozenset({"path", "query", "header", "cookie"})
_KEPT_FIELDS: Final = ("type", "loc", "msg", "ctx")


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _echoed_input(location: str, value: Any) -> tuple[bool, Any]:
    """Whether the error may carry its input, and what of it."""
    if isinstance(value, bool) or value is None:
        return True, value
    if isinstance(value, int | float):
        return len(str(value)) <= EXCERPT_CHARS, value  # a 4000-digit number is no excerpt
    if location in _PARAMETER_LOCATIONS and isinstance(value, str):
        return location != "cookie", excerpt(value)
    return False, None


def _short(value: Any, limit: int) -> Any:
    return excerpt(value, limit) if isinstance(value, str) else value


def redacted(error: Mapping[str, Any]) -> dict[str, Any]:
    """One error as answered: the rule and where, and at most a short, non-personal excerpt of the input. A few
    messages quote a value (a discriminator's unknown tag): messages and the rule's texts are cut short too."""
    answer = {name: error[name] for name in _KEPT_FIELDS if name in error}
    if "msg" in answer:
        answer["msg"] = _short(answer["msg"], MESSAGE_CHARS)
    if isinstance(answer.get("ctx"), Mapping):
        answer["ctx"] = {name: _short(value, MESSAGE_CHARS) for name, value in answer["ctx"].items()}
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


async def single_valued_query(request: Request) -> None:
    """A router dependency: every query parameter of the API is one value (lists are comma-separated, e.g.
    `modalities=CT,MR`); one given twice is refused (422) rather than one of its values silently chosen."""
    repeated = sorted(
        {name for name, _ in request.query_params.multi_items() if len(request.query_params.getlist(name)) > 1}
    )
    if repeated:
        raise RequestValidationError(
            [
                {"type": "multiple_values", "loc": ("query", name), "msg": "give this parameter once"}
                for name in repeated
            ]
        )
