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
