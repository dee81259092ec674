"""A per-PACS association budget shared by every Proxymage process: at most `size` concurrent associations to
one peer (MIRC, the viewer store), however many fetcher and identity-matcher replicas run.

The budget is `size` slot documents per peer (`_id` "<peer>#<i>", see `budget_store.MongoSlots`) in a database
all services share for that purpose. Opening an association takes a free or expired slot with one conditional
single-document update (atomic on MongoDB, and on FerretDB behind the local stack's front), holds it with a
lease renewed while the association lives (a heartbeat, like the fetcher's job leases) and gives it back at the
end. A process that dies keeps its slots only until their leases expire.

A caller that finds no free slot polls again after a short jittered backoff (at once when a slot of the same
peer is released in this process), up to a bounded wait; then `AssociationBudgetBusyError`, a transient error
the callers already retry. The rule of which slot may be taken is pure (`may_take`, `choose_slot`), so it is
tested with a fake clock; `MemorySlots` applies it in memory (unit tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from proxymage_shared.errors import TransientError, describe
from proxymage_shared.idempotency import to_ms
from proxymage_shared.logging import get_logger
from proxymage_shared.retry import RetryPolicy

log = get_logger(__name__)

Clock = Callable[[], dt.datetime]

# The lease_until of a free slot: expired for every `now`.
FREE: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Waiting for a slot: 50 ms, 100 ms, ... up to 1 s between tries (jittered) for a slot freed by another process;
# a release in this process wakes its own waiters at once. Every try is a write on the shared database: with a
# dozen workers waiting, a shorter cap would mostly load it with failed tries.
WAIT_POLICY_BASE_SECONDS: Final = 0.05
WAIT_POLICY_MAX_SECONDS: Final = 1.0


class AssociationBudgetBusyError(TransientError):
    """Every slot of the peer's budget stayed held for the whole bounded wait."""


class AssociationBudgetUnavailableError(TransientError):
    """The budget's database did not answer: no association is opened without a slot."""


# --- the rule, pure --------------------------------------------------------------------------------------------


def slot_id(peer: str, index: int) -> str:
    return f"{peer}#{index}"


def slot_ids(peer: str, size: int) -> list[str]:
    """The slots of a budget of `size` associations to `peer`."""
    return [slot_id(peer, index) for index in range(size)]


@dataclass(frozen=True, slots=True)
class SlotState:
    """A slot as stored: who holds it (an acquisition's token, None when free) and until when."""

    holder: str | None = None
    lease_until: dt.datetime = FREE


def may_take(state: SlotState | None, now: dt.datetime) -> bool:
    """A slot may be taken when nobody holds it, or its holder's lease has expired (a crashed process)."""
    return state is None or state.holder is None or state.lease_until <= now


def choose_slot(states: Mapping[str, SlotState], peer: str, size: int, now: dt.datetime) -> str | None:
    """The first slot of `peer`'s budget that may be taken now (a missing slot is free), or None: all held."""
    for candidate in slot_ids(peer, size):
        if may_take(states.get(candidate), now):
            return candidate
    return None


# --- the store (port) and its in-memory version ----------------------------------------------------------------


class SlotStore(Protocol):
    """Where the slots live. Each method is one single-document conditional write."""

    async def take(
        self, peer: str, size: int, holder: str, process: str, now: dt.datetime, until: dt.datetime
    ) -> str | None:
        """Takes a slot of `peer` that `may_take` now, for `holder` until `until`; its id, or None."""
        ...

    async def renew(self, slot: str, holder: str, until: dt.datetime) -> bool:
        """Extends `holder`'s lease of `slot`; False when it no longer holds it (expired and taken over)."""
        ...

    async def release(self, slot: str, holder: str) -> None:
        """Frees `slot` if `holder` still holds it."""
        ...


@dataclass
class MemorySlots:
    """`SlotStore` in memory: the rule above over a dict (unit tests; one process only)."""

    states: dict[str, SlotState] = field(default_factory=dict)

    async def take(
        self, peer: str, size: int, holder: str, process: str, now: dt.datetime, until: dt.datetime
    ) -> str | None:
        chosen = choose_slot(self.states, peer, size, now)
        if chosen is not None:
            self.states[chosen] = SlotState(holder, until)
        return chosen

    async def renew(self, slot: str, holder: str, until: dt.datetime) -> bool:
        state = self.states.get(slot)
        if state is None or state.holder != holder:
            return False
        self.states[slot] = SlotState(holder, until)
        return True

    async def release(self, slot: str, holder: str) -> None:
        state = self.states.get(slot)
        if state is not None and state.holder == holder:
            self.states[slot] = SlotState()

    def held(self, now: dt.datetime) -> list[str]:
        return [slot for slot, state in self.states.items() if not may_take(state, now)]


# --- the budget ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetOptions:
    lease: dt.timedelta = dt.timedelta(seconds=15)
    # The bounded wait for a slot (then AssociationBudgetBusyError), unless the caller gives its own.
    wait_seconds: float = 60.0

    @property
    def renew_every(self) -> float:
        """The heartbeat's period: a third of the lease, so one slow write never lets it lapse."""
        return self.lease.total_seconds() / 3


@dataclass(frozen=True, slots=True)
class _Held:
    slot: str
    holder: str


class AssociationBudget:
    """`async with budget.slot(peer, size):` around each association to `peer`; `hold` for one whose release
    outlives the caller's wait (the DICOM client's)."""

    def __init__(
        self,
        store: SlotStore,
        *,
        process: str,
        options: BudgetOptions | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._process = process  # who holds a slot, for operators reading the collection
        self._options = options or BudgetOptions()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._waiting = RetryPolicy(
            max_attempts=0, base_seconds=WAIT_POLICY_BASE_SECONDS, max_seconds=WAIT_POLICY_MAX_SECONDS
        )
        if rng is not None:
            self._waiting = dataclasses.replace(self._waiting, rng=rng)
        self._released: dict[str, asyncio.Event] = {}

    def _now(self) -> dt.datetime:
        return to_ms(self._clock())

    @contextlib.asynccontextmanager
    async def slot(self, peer: str, size: int, *, wait_seconds: float | None = None) -> AsyncIterator[str]:
        """Holds one of `size` slots of `peer` for the body's duration (renewed while it runs); yields its id.
        Raises AssociationBudgetBusyError after `wait_seconds` (default: the options') without a free slot."""
        held = await self.hold(peer, size, wait_seconds=wait_seconds)
        try:
            yield held.slot
        except BaseException as error:
            await held.end_on(error)
            raise
        await held.give_back()

    async def hold(self, peer: str, size: int, *, wait_seconds: float | None = None) -> HeldSlot:
        """One of `size` slots of `peer`, held (renewed) until `give_back` or `abandon`: for an association that
        outlives the caller's wait (its release runs after the answer is handed over)."""
        held = await self._acquire(peer, size, self._options.wait_seconds if wait_seconds is None else wait_seconds)
        heartbeat = asyncio.create_task(self._heartbeat(held), name=f"budget-{held.slot}")
        return HeldSlot(held.slot, heartbeat, functools.partial(self._release, peer, held))

    async def _acquire(self, peer: str, size: int, wait_seconds: float) -> _Held:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        released = self._released.setdefault(peer, asyncio.Event())
        attempt = 0
        while True:
            now = self._now()
            holder = uuid.uuid4().hex  # one token per acquisition: a release never frees someone else's slot
            taken = await self._store.take(peer, size, holder, self._process, now, now + self._options.lease)
            if taken is not None:
                return _Held(taken, holder)
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssociationBudgetBusyError(
                    f"the {size} associations allowed to {peer} stayed in use for {wait_seconds:g} s"
                )
            # asyncio.timeout, not wait_for: Python 3.11's wait_for may swallow a cancellation (a stop) that
            # arrives as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._waiting.delay(attempt), remaining)):
                    await released.wait()

    async def _heartbeat(self, held: _Held) -> None:
        while True:
            await asyncio.sleep(self._options.renew_every)
            try:
                renewed = await self._store.renew(held.slot, held.holder, self._now() + self._options.lease)
            except Exception as error:  # the next beat tries again; the lease may lapse meanwhile
                log.warning("association_slot_renewal_failed", slot=held.slot, error=describe(error))
                continue
            if not renewed:
                # This process stalled past the lease and another took the slot: the association goes on to its
                # end (it cannot be taken back from its thread), so the peer may briefly see one more.
                log.warning("association_slot_lost", slot=held.slot)
                return

    async def _release(self, peer: str, held: _Held) -> None:
        try:
            await self._store.release(held.slot, held.holder)
        except Exception as error:  # the lease lapses on its own
            log.warning("association_slot_release_failed", slot=held.slot, error=describe(error))
        released = self._released.get(peer)
        if released is not None:  # wakes this process's waiters now (set, then clear: wakes the current ones)
            released.set()
            released.clear()


class HeldSlot:
    """A slot taken by `AssociationBudget.hold`: renewed until given back (freed now) or abandoned (it lapses
    with its lease, for an association that may still run in a thread nobody waits for)."""

    def __init__(self, slot: str, heartbeat: asyncio.Task[None], release: Callable[[], Awaitable[None]]) -> None:
        self.slot = slot
        self._heartbeat = heartbeat
        self._release = release
        self._ended = False

    async def _stop_renewing(self) -> bool:
        if self._ended:
            return False
        self._ended = True
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        return True

    async def give_back(self) -> None:
        if await self._stop_renewing():
            await self._release()

    async def abandon(self) -> None:
        await self._stop_renewing()

    async def end_on(self, error: BaseException) -> None:
        """Ends the hold after its association failed with `error`. A cancellation (a stop) abandons the slot: the
        association may go on in its thread, so the slot lapses with its lease. Any other error means the
        association was aborted or never opened: it is over, and the slot is given back."""
        if isinstance(error, asyncio.CancelledError):
            await self.abandon()
        else:
            await self.give_back()
