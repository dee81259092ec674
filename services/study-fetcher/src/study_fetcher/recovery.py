"""Recovery follows the peer, not the clock: when MIRC (or the viewer store) answers again, the jobs that wait
because it was unreachable are retried within seconds, not at their backoff's next slot (up to 30 min later).

Each fetcher instance asks its peers every `peer_probe_seconds` whether they answer (the C-ECHO of `/readyz`).
`PeerStates` (pure) tells when a peer comes back: after a failed probe, or at the first answer after start (the
jobs may have started waiting before this instance did); and for `RECHECKS` probes after that, since an attempt
started before the return may end after it, still "unreachable" (a connection timing out), then wait its
backoff. Then `PeerRecovery.peer_back` finds the jobs waiting
for it (`waiting_for`, indexed) and applies `domain.PeerBack` to each: due within
`peer_recovery_spread_seconds` (jittered), published with the reason "… de nouveau joignable, reprise", so
the DCC stops showing "injoignable" as soon as it is known. Every instance does it; the second finds nothing
left waiting. A recovery that fails (MongoDB down) is tried again at the next probe.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import Counter
from proxymage_shared.errors import describe
from proxymage_shared.idempotency import to_ms
from proxymage_shared.logging import get_logger

from study_fetcher import domain
from study_fetcher.ports import Clock, JobChanges, JobRepository

log = get_logger(__name__)

Probe = Callable[[], Awaitable[object]]  # raises (or answers False) when the peer does not answer

BROUGHT_FORWARD: Final = Counter(
    "proxymage_fetcher_jobs_brought_forward_total",
    "Waiting jobs retried at once because the peer they waited for answers again.",
    ["peer"],
)


# Probes after a peer's return that still bring forward the jobs found waiting for it (stragglers of attempts
# that started before the return). Bounded: a peer that answers probes but fails attempts is not retried hot.
RECHECKS: Final = 3


@dataclass
class PeerStates:
    """Whether each peer answered its last probe (unknown before the first), and how many recoveries are still
    owed to one that came back. Pure."""

    answered: dict[str, bool] = field(default_factory=dict)
    owed: dict[str, int] = field(default_factory=dict)

    def comes_back(self, peer: str) -> bool:
        """Whether the peer, answering now, did not (or is not known to) at the previous probe."""
        return not self.answered.get(peer, False)

    def should_recover(self, peer: str, answers: bool) -> bool:
        """Whether to bring the peer's waiting jobs forward after this probe: at its return, then for
        `RECHECKS` probes. Until the caller `record`s the recovery, the peer still counts as not answering."""
        return answers and (self.comes_back(peer) or self.owed.get(peer, 0) > 0)

    def record(self, peer: str, answers: bool, *, recovered: bool = False) -> None:
        came_back = answers and self.comes_back(peer)
        self.answered[peer] = answers
        if not answers:
            self.owed.pop(peer, None)
        elif recovered:
            self.owed[peer] = RECHECKS if came_back else self.owed.get(peer, 1) - 1


class PeerRecovery:
    """Brings forward the jobs waiting for a peer that answers again."""

    def __init__(
        self,
        *,
        jobs: JobRepository,
        updater: JobChanges,
        spread_seconds: float,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._jobs = jobs
        self._updater = updater
        self._spread = spread_seconds
        self._clock = clock
        self._rng = rng  # the retrieval policy's: every delay is jittered by the policy's own generator

    async def peer_back(self, peer: str) -> int:
        """Makes each job waiting for `peer` due within the spread from now, with the reason saying the peer is
        back; how many changed (a job that changed meanwhile is judged again as it now is)."""
        now = to_ms(self._clock())
        changed = 0
        for stored in await self._jobs.waiting_for_peer(peer):
            at = to_ms(domain.recovery_at(now, self._spread, self._rng))
            _, applied = await self._updater.apply(stored, domain.PeerBack(peer, at))
            changed += applied
        if changed:
            BROUGHT_FORWARD.labels(peer).inc(changed)
        return changed


class PeerWatch:
    """Probes the peers; on a return, recovers the jobs waiting for it (`PeerRecovery.peer_back`) and wakes the
    workers. Logs one warning when a peer stops answering and one info when it is back."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        recovery: PeerRecovery,
        wake: Callable[[], None],
        clock: Clock,
    ) -> None:
        self._probes = dict(probes)
        self._recovery = recovery
        self._wake = wake
        self._clock = clock
        self.states = PeerStates()
        self._down_since: dict[str, dt.datetime] = {}

    async def probe_once(self) -> None:
        for peer, probe in self._probes.items():
            error: str | None = None
            try:
                answers = (await probe()) is not False
            except Exception as failure:
                answers, error = False, describe(failure)
            if not answers:
                if peer not in self._down_since:  # once per outage, not once per probe
                    log.warning("peer_unreachable", peer=peer, error=error)
                    self._down_since[peer] = self._clock()
                self.states.record(peer, answers=False)
                continue
            if not self.states.should_recover(peer, answers=True):
                self.states.record(peer, answers=True)
                continue
            changed = await self._recovery.peer_back(peer)  # raises: recorded as not back, tried again
            since = self._down_since.pop(peer, None)
            if since is not None or changed:
                log.info(
                    "peer_back",
                    peer=peer,
                    jobs_brought_forward=changed,
                    down_seconds=None if since is None else round((self._clock() - since).total_seconds(), 1),
                )
            if changed:
                self._wake()
            self.states.record(peer, answers=True, recovered=True)
