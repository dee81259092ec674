"""An async DICOM query/retrieve client over pynetdicom.

pynetdicom is blocking, so every request runs in a bounded thread pool, never on the event loop; the pool's
size caps this process's concurrent associations to the peer (a semaphore held from associate to released), and
the association budget (`budget.py`, when given) caps those of all Proxymage processes together: each
association holds one of the peer's `max_associations` slots from before it opens until it has ended. One
association per request: associate, send, collect every response, release (abort on error) — all inside the
unit that a caller may retry, so a retried C-FIND never duplicates half-read results (CONVENTIONS.md).
Without a budget, the release of a request that got its final response runs after its answer is returned (a
round trip plus pynetdicom's thread shutdown, 2-15 ms measured, that no caller needs to wait for); with one, it
ends before the slot is given back, so that the budget counts every open association.

Every request counts in `proxymage_dicom_requests_total{peer,operation,outcome}` (tests use it to prove,
e.g., that no C-FIND reached the PACS).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from proxymage_shared import metrics
from proxymage_shared.dicom import errors, queries
from proxymage_shared.dicom.budget import AssociationBudget, AssociationBudgetBusyError, HeldSlot
from proxymage_shared.dicom.results import MoveProgress, MoveResult, PatientRecord, StudyRecord
from proxymage_shared.dicom.status import Outcome, classify
from proxymage_shared.errors import describe
from proxymage_shared.logging import get_logger
from proxymage_shared.settings import DicomPeer

# PACS answers are checked by our own code; pydicom's value warnings would only be noise (or, under
# pytest's warnings-as-errors, crashes) on the odd values PACS send.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

log = get_logger(__name__)

T = TypeVar("T")
ProgressCallback = Callable[[MoveProgress], None]


@dataclass(frozen=True, slots=True)
class DicomTimeouts:
    """Seconds. `dimse` bounds the wait for each response, so a long C-MOVE needs a generous one."""

    connection: float = 5.0
    acse: float = 10.0
    dimse: float = 120.0
    network: float = 120.0


# A probe waits this long at most for a slot of the budget (readiness checks have 2 s).
PROBE_SLOT_WAIT_SECONDS: Final = 1.0
MOVE_MSG_ID: Final = 1  # the C-MOVE's message id, which a C-CANCEL names
CANCEL_GRACE_SECONDS: Final = 1.0  # how long a peer may go on after C-CANCEL before we abort


def _bind_event_logging() -> None:
    """pynetdicom's standard handlers (bound to each association it creates) format every PDU and DIMSE
    message for its INFO/DEBUG log: about a fifth of the Python calls that a C-MOVE's pending responses (one per
    instance) cost, on the CPU the two Orthanc need during the move (measured). They are bound only while the
    `pynetdicom` logger shows INFO (`PROXYMAGE_LOG_LEVELS`); its warnings and errors are logged either way.
    (`_config` is pynetdicom's documented settings module.)"""
    enabled = logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if enabled else "none"


def set_tcp_nodelay(event: Any) -> None:
    """An `EVT_CONN_OPEN` handler for every association we open (queries, moves, test seeding)."""
    # pynetdicom never disables Nagle's algorithm; with delayed ACKs every small PDU exchange waits ~40 ms.
    # Measured: a C-FIND round trip goes from ~69 ms to ~23 ms on loopback (ARCHITECTURE.md).
    raw = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if raw is not None:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DicomClient:
    """Query/retrieve against one peer (e.g. MIRC or the viewer's store), as `calling_ae_title`."""

    def __init__(
        self,
        calling_ae_title: str,
        peer: DicomPeer,
        *,
        max_associations: int = 4,
        timeouts: DicomTimeouts | None = None,
        budget: AssociationBudget | None = None,
    ) -> None:
        self.peer = peer
        self._budget = budget
        self._timeouts = timeouts or DicomTimeouts()
        self._ae = AE(ae_title=calling_ae_title)
        self._ae.connection_timeout = self._timeouts.connection
        self._ae.acse_timeout = self._timeouts.acse
        self._ae.dimse_timeout = self._timeouts.dimse
        self._ae.network_timeout = self._timeouts.network
        for context in (
            Verification,
            PatientRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelMove,
        ):
            self._ae.add_requested_context(context)
        self._pool = ThreadPoolExecutor(max_workers=max_associations, thread_name_prefix=f"dicom-{peer.ae_title}")
        self._releases = ThreadPoolExecutor(
            max_workers=max_associations, thread_name_prefix=f"dicom-{peer.ae_title}-release"
        )
        self._associations = threading.BoundedSemaphore(max_associations)
        self._local = threading.local()  # the background release of the association the thread just used
        self._giving_back: set[asyncio.Task[None]] = set()  # budget slots held until their association's release

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._releases.shutdown(wait=True)

    async def aclose(self) -> None:
        """`close` once the budget slots of associations still being released are given back (a service's stop)."""
        await self.drain()
        await asyncio.to_thread(self.close)

    # --- the association's life, in one place ---------------------------------------------------------

    @contextmanager
    def _association(self, operation: str) -> Iterator[Association]:
        """The association of one request; released in the background once the request is answered."""
        self._associations.acquire()
        try:
            _bind_event_logging()
            assoc = self._ae.associate(
                self.peer.host,
                self.peer.port,
                ae_title=self.peer.ae_title,
                evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)],
            )
            if not assoc.is_established:
                what = "rejected" if assoc.is_rejected else "could not be established"
                raise errors.DicomUnavailableError(
                    f"{operation}: association with {self.peer.ae_title} at {self.peer.host}:{self.peer.port} {what}"
                )
            try:
                yield assoc
            except BaseException:
                assoc.abort()
                raise
        except BaseException:
            self._associations.release()
            raise
        # The answer is complete: the caller has it now, the release (a round trip, up to ~12 ms with pynetdicom's
        # timers) runs in the background. A budget slot is given back once that release is over (`_run`).
        try:
            self._local.released = self._releases.submit(self._release, assoc)
        except RuntimeError:  # closing: release it here
            self._release(assoc)

    def _release(self, assoc: Association) -> None:
        try:
            assoc.release()
        except Exception as error:  # the answers were complete; the peer drops the association on its own
            log.debug("association_release_failed", peer=self.peer.ae_title, error=describe(error))
        finally:
            self._associations.release()

    async def _run(
        self,
        operation: str,
        work: Callable[[], T],
        *,
        slot_wait_seconds: float | None = None,
        on_started: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """Runs `work` (in the pool) under a slot of the peer's budget; `on_started` is awaited once the slot is
        held, just before the association opens (never when no slot came: the request was not sent)."""
        if self._budget is None:
            if on_started is not None:
                await on_started()
            result, _ = await self._timed(operation, work)
            return result
        waited = time.perf_counter()
        held = await self._budget.hold(self.peer.ae_title, self.peer.max_associations, wait_seconds=slot_wait_seconds)
        try:
            metrics.DICOM_SLOT_WAIT_SECONDS.labels(self.peer.ae_title).observe(time.perf_counter() - waited)
            if on_started is not None:
                await on_started()
            result, released = await self._timed(operation, work)
        except BaseException as error:
            await held.end_on(error)
            raise
        if released is None:  # released in this thread (closing)
            await held.give_back()
        else:
            task = asyncio.create_task(self._give_back_after(released, held), name=f"give-back-{held.slot}")
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)
        return result

    @staticmethod
    async def _give_back_after(released: Future[None], held: HeldSlot) -> None:
        """The slot stays held until the association is really over: the peer never sees more than the budget."""
        try:
            # Shielded: cancelling this wait (a stop tearing tasks down) must not cancel the release itself.
            await asyncio.shield(asyncio.wrap_future(released))
        except asyncio.CancelledError:
            await held.abandon()  # the association may not be over: its slot lapses with its lease
            raise
        except Exception:  # noqa: S110 - `_release` logs its own failures; the association is over either way
            pass
        await held.give_back()

    async def drain(self) -> None:
        """Waits for the budget slots still held by associations being released (a stop, before `close`)."""
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)

    async def _timed(self, operation: str, work: Callable[[], T]) -> tuple[T, Future[None] | None]:
        """`work`'s result, and the background release of the association it used (None if none or released)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await loop.run_in_executor(self._pool, functools.partial(self._tracked, work))
        except (
            errors.DicomUnavailableError,
            errors.DicomTransientError,
            errors.MalformedAnswerError,
            errors.IncompleteMoveError,
            errors.MoveCancelledError,
        ):
            outcome = "transient"
            raise
        except errors.DicomPermanentError:
            outcome = "permanent"
            raise
        else:
            outcome = "ok"
            return result
        finally:
            metrics.DICOM_REQUESTS.labels(self.peer.ae_title, operation, outcome).inc()
            metrics.DICOM_SECONDS.labels(self.peer.ae_title, operation).observe(time.perf_counter() - started)

    def _tracked(self, work: Callable[[], T]) -> tuple[T, Future[None] | None]:
        """Runs `work` in a pool thread; with it, the release its association left running (see `_association`)."""
        self._local.released = None
        try:
            return work(), self._local.released
        except BaseException:
            # `work` failed after its association was answered (e.g. an answer that does not parse): the caller
            # gives the budget's slot back on the error, so the release must be over first.
            pending: Future[None] | None = self._local.released
            if pending is not None:
                with contextlib.suppress(Exception):
                    pending.result()
            raise
        finally:
            self._local.released = None

    def _raise_for(self, operation: str, status: int) -> None:
        outcome, meaning = classify(status)
        message = f"{operation} on {self.peer.ae_title}: {meaning} (status 0x{status:04X})"
        if outcome is Outcome.PERMANENT:
            raise errors.DicomPermanentError(message, status=status)
        raise errors.DicomTransientError(message, status=status)

    # --- one small method per DIMSE service ---------------------------------------------------------

    async def echo(self) -> None:
        """C-ECHO: raises unless the peer answers with success; AssociationBudgetBusyError when every slot of
        the budget stays held for PROBE_SLOT_WAIT_SECONDS."""

        def work() -> None:
            with self._association("C-ECHO") as assoc:
                status = assoc.send_c_echo()
                if "Status" not in status:
                    raise errors.DicomUnavailableError(f"C-ECHO: no answer from {self.peer.ae_title}")
                if status.Status != 0x0000:
                    self._raise_for("C-ECHO", int(status.Status))

        await self._run("C-ECHO", work, slot_wait_seconds=PROBE_SLOT_WAIT_SECONDS)

    def _find(self, identifier: Dataset, model: Any) -> list[Dataset]:
        answers: list[Dataset] = []
        with self._association("C-FIND") as assoc:
            for status, found in assoc.send_c_find(identifier, model):
                if "Status" not in status:
                    raise errors.DicomUnavailableError(f"C-FIND: {self.peer.ae_title} stopped answering")
                outcome, _ = classify(int(status.Status))
                if outcome is Outcome.PENDING:
                    if found is None:
                        raise errors.MalformedAnswerError(
                            f"C-FIND: pending response without identifier from {self.peer.ae_title}"
                        )
                    answers.append(found)
                elif outcome is Outcome.SUCCESS:
                    return answers
                else:
                    self._raise_for("C-FIND", int(status.Status))
        raise errors.DicomUnavailableError(f"C-FIND: {self.peer.ae_title} ended without a final status")

    async def find_patients(self, identifier: Dataset) -> list[PatientRecord]:
        """Patient-level C-FIND (Patient Root); build `identifier` with `queries.patient_query`."""

        def work() -> list[PatientRecord]:
            found = self._find(identifier, PatientRootQueryRetrieveInformationModelFind)
            return [PatientRecord.from_dataset(ds) for ds in found]

        return await self._run("C-FIND", work)

    async def find_studies(self, identifier: Dataset) -> list[StudyRecord]:
        """Study-level C-FIND (Study Root); build `identifier` with `queries.study_query`."""

        def work() -> list[StudyRecord]:
            found = self._find(identifier, StudyRootQueryRetrieveInformationModelFind)
            return [StudyRecord.from_dataset(ds) for ds in found]

        return await self._run("C-FIND", work)

    async def move_study(
        self,
        study_instance_uid: str,
        destination_ae_title: str,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        on_started: Callable[[], Awaitable[None]] | None = None,
    ) -> MoveResult:
        """Study-level C-MOVE to `destination_ae_title`; the data flows from the peer to the destination.

        `on_progress` is called on the event loop with each pending response's sub-operation counts.
        Returns only a complete move; raises `errors.IncompleteMoveError` when any sub-operation failed (even under a
        "success" status: never treat a partial study as complete) and `errors.DicomPermanentError` when the peer
        refuses the move (e.g. unknown destination). Setting `cancel` cancels the move: C-CANCEL, then an
        abort if the peer keeps going; it then raises `errors.MoveCancelledError`. `on_started` is awaited when the
        move is about to be sent (a slot of the budget held), not when the budget stayed full.
        """
        loop = asyncio.get_running_loop()

        def report(progress: MoveProgress) -> None:
            if on_progress is not None:
                loop.call_soon_threadsafe(on_progress, progress)

        def work() -> MoveResult:
            identifier = queries.study_move_identifier(study_instance_uid)
            cancel_sent_at: float | None = None
            with self._association("C-MOVE") as assoc:
                for status, _ in assoc.send_c_move(
                    identifier, destination_ae_title, StudyRootQueryRetrieveInformationModelMove, msg_id=MOVE_MSG_ID
                ):
                    if cancel is not None and cancel.is_set():
                        if cancel_sent_at is None:
                            # PS3.7 §9.3.4.3: C-CANCEL of the running C-MOVE (same message id); a peer that
                            # honours it ends with status 0xFE00.
                            assoc.send_c_cancel(MOVE_MSG_ID, query_model=StudyRootQueryRetrieveInformationModelMove)
                            cancel_sent_at = time.monotonic()
                        elif time.monotonic() - cancel_sent_at > CANCEL_GRACE_SECONDS:
                            # The peer ignores C-CANCEL (Orthanc 1.10 does): leaving aborts the association.
                            raise errors.MoveCancelledError(f"C-MOVE from {self.peer.ae_title}: cancelled (aborted)")
                    if "Status" not in status:
                        if cancel_sent_at is not None:
                            raise errors.MoveCancelledError(f"C-MOVE from {self.peer.ae_title}: cancelled")
                        raise errors.DicomUnavailableError(f"C-MOVE: {self.peer.ae_title} stopped answering")
                    code = int(status.Status)
                    counts = _sub_operations(status)
                    outcome, meaning = classify(code)
                    if cancel_sent_at is not None and outcome is not Outcome.PENDING:
                        raise errors.MoveCancelledError(f"C-MOVE from {self.peer.ae_title}: cancelled ({meaning})")
                    if outcome is Outcome.PENDING:
                        report(counts)
                        continue
                    if outcome in (Outcome.SUCCESS, Outcome.WARNING):
                        result = MoveResult(code, counts.completed, counts.failed, counts.warning)
                        if not result.complete:
                            raise errors.IncompleteMoveError(
                                f"C-MOVE from {self.peer.ae_title}: {meaning}; "
                                f"{counts.completed} completed, {counts.failed} failed",
                                result=result,
                            )
                        return result
                    self._raise_for("C-MOVE", code)
            raise errors.DicomUnavailableError(f"C-MOVE: {self.peer.ae_title} ended without a final status")

        return await self._run("C-MOVE", work, on_started=on_started)


def _count(status: Dataset, keyword: str) -> int:
    value = status.get(keyword)
    try:
        return max(int(value), 0) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def _sub_operations(status: Dataset) -> MoveProgress:
    return MoveProgress(
        remaining=_count(status, "NumberOfRemainingSuboperations"),
        completed=_count(status, "NumberOfCompletedSuboperations"),
        failed=_count(status, "NumberOfFailedSuboperations"),
        warning=_count(status, "NumberOfWarningSuboperations"),
    )


def echo_check(client: DicomClient) -> Callable[[], Awaitable[bool]]:
    """A readiness check: the peer answers a C-ECHO."""

    async def check() -> bool:
        with contextlib.suppress(AssociationBudgetBusyError):
            # Every association the budget allows is open and their holders alive (they renew their leases): the
            # peer takes associations (one that refuses them frees its slots at once). A probe must neither wait
            # behind long moves nor open one association more than the budget.
            await client.echo()
        return True

    return check
