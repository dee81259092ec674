"""The two kinds of failure every adapter reports (CONVENTIONS.md, after adit's DicomError split).

A handler raises `TransientError` when trying again later may succeed (a server down, a timeout) and
`PermanentError` when it never will (a PACS refusing a request, an invalid message). The Kafka consumer
retries the first with backoff and dead-letters the second at once.
"""

from __future__ import annotations


class ProxymageError(Exception):
    """Base of the project's errors. The message is shown to operators: no patient data in it."""


class TransientError(ProxymageError):
    """May succeed if tried again later."""


class PermanentError(ProxymageError):
    """Will fail the same way every time: do not retry."""


class WriteConflictError(TransientError):
    """A read-then-conditional write kept losing to concurrent writers (`idempotency.until_written`)."""


def describe(error: BaseException) -> str:
    """The one rule for an error's details in logs and dead-letter reasons: what cannot quote stored or
    received data. Our own errors' messages are written for operators (no patient data, see `ProxymageError`);
    a validation error is told by field and rule, without the values; a driver or system error by its type and
    code; any other error by its type only (a library's message may quote a document, a query or a name)."""
    kind = type(error).__name__
    if isinstance(error, ProxymageError):
        return f"{kind}: {error}" if str(error) else kind
    details = validation_details(error)
    if details is not None:
        return f"{kind}: {details}" if details else kind
    if isinstance(error, OSError) and error.errno is not None:
        return f"{kind} (errno {error.errno}: {error.strerror})"
    code = getattr(error, "code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return f"{kind} (code {code})"
    return kind


def validation_details(error: BaseException) -> str | None:
    """A (pydantic) validation error's fields and rules, `loc: msg; ...`, without the values (they may be patient
    data); "" if it cannot tell them, None for any other error."""
    errors = getattr(error, "errors", None)
    if not callable(errors) or type(error).__name__ != "ValidationError":
        return None
    try:
        items = errors(include_input=False, include_url=False, include_context=False)
    except TypeError:
        return ""
    return "; ".join(f"{'.'.join(str(part) for part in item['loc']) or '(message)'}: {item['msg']}" for item in items)
