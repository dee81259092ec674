"""The faults, each driven as a DCC would see them and measured against its goal (ARCHITECTURE.md "Processing
semantics", "Retrieval state machine"; issue 14). Each returns its rows; `run` bounds each with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from proxymage_shared import topics
from proxymage_shared.events import StudyStatusChanged
from proxymage_shared.kafka import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_SERVICE, DLQ_TOPIC

from proxymage_dev.chaos import malformed as bad
from proxymage_dev.chaos.dcc import Dcc, enrolment_event, meeting_event, selection_event
from proxymage_dev.chaos.stack import Servers, Services, connected_to, http_ok
from proxymage_dev.chaos.table import Row, per_minute
from proxymage_dev.synthetic import BENCH_PATIENT, PATIENTS, SyntheticPatient, SyntheticStudy

TAKEOVER_GOAL_SECONDS: Final = 20.0
RECOVERY_GOAL_SECONDS: Final = 30.0
LOG_LINES_PER_MINUTE_GOAL: Final = 10.0
MOVED: Final = ("proxymage_fetcher_moves_total", 'kind="moved"')


@dataclass
class Chaos:
    servers: Servers
    services: Services
    dcc: Dcc
    run: str  # a short id in every business id of this run
    studies: list[SyntheticStudy]  # what MIRC holds (seed 42)
    large: SyntheticStudy  # the large CT study of the benchmark patient

    def uids(self, *keys: str) -> set[str]:
        return {study.study_instance_uid for study in self.studies if study.patient.key in keys}

    def mail(self, role: str, scenario: str) -> str:
        return f"{role}+{scenario}-{self.run}@chu-fictif.mssante.test"


def patient(key: str) -> SyntheticPatient:
    return next(p for p in PATIENTS if p.key == key)


def now() -> float:
    return time.monotonic()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.25) -> float:
    """Polls `condition` until it holds; returns when (monotonic). Raises TimeoutError naming `what`."""
    deadline = now() + timeout
    while not await condition():
        if now() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)
    return now()


async def catalogued(chaos: Chaos, enrolment_id: str, expected: set[str], timeout: float = 90) -> None:
    seen: dict[str, Any] = {}

    async def listed() -> bool:
        nonlocal seen
        seen = await chaos.dcc.enrolment(enrolment_id) or {}
        return expected <= {study["study_instance_uid"] for study in seen.get("studies", ())}

    try:
        await until(listed, timeout, f"the catalogue of {enrolment_id}")
    except TimeoutError as error:
        identity = seen.get("identity", {}).get("status", "unknown to the gateway")
        raise TimeoutError(
            f"{error} (identity {identity}, {len(seen.get('studies', ()))}/{len(expected)} studies listed)"
        ) from None


async def all_available(chaos: Chaos, enrolment_id: str, uids: set[str]) -> bool:
    states = await chaos.dcc.statuses(enrolment_id)
    return all(states.get(uid, ("", None))[0] == "available" for uid in uids)


async def moved_total(chaos: Chaos) -> float:
    return sum([await chaos.dcc.metric(s.port, *MOVED) for s in chaos.services.fetchers() if s.alive()])


# --- replay x3 -------------------------------------------------------------------------------------------------------


async def replay(chaos: Chaos, repeats: int = 3) -> list[Row]:
    """The meeting's experts, an enrolment and a selection with expertise, each published again `repeats` times
    (same event ids, as a DCC re-sending or an offset reset would) while the first copies are being handled."""
    dcc, run = chaos.dcc, chaos.run
    meeting_id, enrolment_id = f"m-replay-{run}", f"enr-replay-{run}"
    radiologist, nuclear = chaos.mail("radio", "replay"), chaos.mail("nucleo", "replay")
    expected = chaos.uids("beranger_tours", "beranger_blois")
    meeting = meeting_event(meeting_id, radiologist, nuclear)
    enrolment = enrolment_event(enrolment_id, meeting_id, patient("beranger_tours"))
    await dcc.publish(topics.MEETING_EXPERTS, meeting_id, meeting)
    await dcc.publish(topics.PATIENT_ENROLLED, enrolment_id, enrolment)
    await catalogued(chaos, enrolment_id, expected)
    chosen = set(sorted(expected)[:2])
    for uid in chosen:
        await dcc.delete_from_viewer(uid)
    moved_before = await moved_total(chaos)
    selection = selection_event(enrolment_id, sorted(chosen), expertise=True)
    await dcc.publish(topics.STUDIES_SELECTED, enrolment_id, selection)
    for _ in range(repeats):
        await dcc.publish(topics.MEETING_EXPERTS, meeting_id, meeting)
        await dcc.publish(topics.PATIENT_ENROLLED, enrolment_id, enrolment)
        await dcc.publish(topics.STUDIES_SELECTED, enrolment_id, selection)

    async def done() -> bool:
        return (
            await all_available(chaos, enrolment_id, chosen)
            and min(dcc.mails_to(radiologist), dcc.mails_to(nuclear)) >= 1
        )

    await until(done, 120, "the selected studies available and both e-mails sent")
    await dcc.settled(60)
    await asyncio.sleep(5)  # an e-mail worker or retrieval worker polls its queue: give a duplicate time to show
    await dcc.settled(60)
    moves = round(await moved_total(chaos) - moved_before)
    mails = (dcc.mails_to(radiologist), dcc.mails_to(nuclear))
    document = await dcc.enrolment(enrolment_id) or {}
    notifications = document.get("expertise", {}).get("notifications", [])
    passed = moves == len(chosen) and mails == (1, 1) and len(notifications) == 2
    return [
        Row(
            "replay x3",
            f"{repeats} replays of experts+enrolment+selection: 1 move/study, 1 e-mail/expert",
            f"{moves} moves for {len(chosen)} studies; e-mails {mails[0]}+{mails[1]}; "
            f"{len(notifications)} notifications in REST",
            passed,
        )
    ]


# --- kill -9 of a fetcher mid-move -----------------------------------------------------------------------------------


async def next_status(
    queue: asyncio.Queue[tuple[float, StudyStatusChanged]],
    enrolment_id: str,
    wanted: Callable[[StudyStatusChanged], bool],
    timeout: float,
) -> tuple[float, StudyStatusChanged]:
    deadline = now() + timeout
    while True:
        at, event = await asyncio.wait_for(queue.get(), max(0.01, deadline - now()))
        if event.enrolment_id == enrolment_id and wanted(event):
            return at, event


async def find_mover(chaos: Chaos, timeout: float = 5) -> str | None:
    """The fetcher holding an association with MIRC in 3 consecutive samples (a peer's C-ECHO probe lasts a few
    milliseconds; the move lasts the whole transfer)."""
    mirc_port = int(chaos.dcc.env["PROXYMAGE_MIRC__PORT"])
    streak: dict[int, int] = {}
    deadline = now() + timeout
    while now() < deadline:
        by_pid = {s.pid: s.name for s in chaos.services.fetchers() if s.alive() and s.pid is not None}
        connected = connected_to(mirc_port, set(by_pid))
        streak = {pid: streak.get(pid, 0) + 1 for pid in connected}
        for pid, count in streak.items():
            if count >= 3:
                return by_pid[pid]
        await asyncio.sleep(0.01)
    return None


@dataclass(frozen=True)
class KillRound:
    mover: str | None
    at_kill: int  # instances in the viewer store when the fetcher was killed
    takeover: float | None  # kill -> `retrieving` with reason `resumed`
    available: float | None  # kill -> `available`


async def kill_fetcher(chaos: Chaos, rounds: int) -> list[Row]:
    """A large study selected, the fetcher moving it killed with SIGKILL mid-move; the other instance must take the
    job over once the lease lapses, and the study end `available`. The killed instance is restarted after."""
    dcc, run, uid = chaos.dcc, chaos.run, chaos.large.study_instance_uid
    total = len(chaos.large.instances)
    meeting_id = f"m-kill-{run}"
    await dcc.publish(topics.MEETING_EXPERTS, meeting_id, meeting_event(meeting_id, chaos.mail("radio", "kill"),
                                                                         chaos.mail("nucleo", "kill")))  # fmt: skip
    results: list[KillRound] = []
    for index in range(rounds):
        enrolment_id = f"enr-kill-{run}-{index}"
        await dcc.publish(
            topics.PATIENT_ENROLLED, enrolment_id, enrolment_event(enrolment_id, meeting_id, BENCH_PATIENT)
        )
        await catalogued(chaos, enrolment_id, {uid})
        await dcc.delete_from_viewer(uid)
        async with dcc.watch_status() as queue:
            await dcc.publish(topics.STUDIES_SELECTED, enrolment_id, selection_event(enrolment_id, [uid], False))
            await next_status(queue, enrolment_id, lambda e: e.status == "retrieving", 60)
            mover = await find_mover(chaos)
            if mover is None:
                results.append(KillRound(None, await dcc.viewer_instances(uid), None, None))
                await until(partial(all_available, chaos, enrolment_id, {uid}), 60, "the study available")
                continue
            chaos.services.kill9(mover)
            killed_at = now()
            at_kill = await dcc.viewer_instances(uid)
            takeover = available = None
            with contextlib.suppress(TimeoutError):
                at, _ = await next_status(
                    queue, enrolment_id, lambda e: e.status == "retrieving" and e.reason_code == "resumed", 45
                )
                takeover = at - killed_at
            with contextlib.suppress(TimeoutError):
                at, _ = await next_status(queue, enrolment_id, lambda e: e.status == "available", 60)
                available = at - killed_at
        chaos.services.start(mover)
        await asyncio.to_thread(chaos.services.wait_ready, [mover])
        if available is not None:  # the gateway shows it too
            await until(partial(all_available, chaos, enrolment_id, {uid}), 30, "the gateway to show it available")
        results.append(KillRound(mover, at_kill, takeover, available))
    killed = [r for r in results if r.mover is not None]
    takeovers = [r.takeover for r in killed if r.takeover is not None]
    availables = [r.available for r in killed if r.available is not None]
    mid_move = sum(r.at_kill < total for r in killed)
    passed = (
        len(killed) == rounds
        and len(takeovers) == rounds
        and len(availables) == rounds
        and max(takeovers) <= TAKEOVER_GOAL_SECONDS
    )
    measured = (
        f"{len(availables)}/{rounds} available; takeover (kill->resumed) "
        + (f"max {max(takeovers):.1f}s median {statistics.median(takeovers):.1f}s" if takeovers else "never")
        + (f"; kill->available max {max(availables):.1f}s" if availables else "")
        + f"; killed mid-move {mid_move}/{len(killed)} (viewer held "
        + ",".join(str(r.at_kill) for r in killed)
        + f"/{total})"
        + ("" if len(killed) == rounds else f"; {rounds - len(killed)} round(s) with no move seen to kill")
    )
    return [
        Row(
            f"kill -9 fetcher mid-move x{rounds}",
            f"every study available, takeover <= {TAKEOVER_GOAL_SECONDS:.0f}s ({total}-instance study)",
            measured,
            passed,
        )
    ]


# --- Kafka stopped and restarted under load --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def restarted(servers: Servers, script: str, *target: str) -> AsyncIterator[None]:
    """Whatever happens in the block, the server is started again after it (if it is down)."""
    try:
        yield
    finally:
        await asyncio.to_thread(servers.script, script, "start", *target)


async def kafka_outage(
    chaos: Chaos, load_seconds: float, outage_seconds: float, catch_up_seconds: float, rate: float = 10
) -> list[Row]:
    """Enrolments published at `rate`/s for `load_seconds` by a DCC that re-sends what the broker did not
    acknowledge; Kafka stopped 5 s in for `outage_seconds`, then started again. Every enrolment must reach the
    gateway's read model (with its identity and catalogue: the whole pipeline), none twice."""
    dcc, run, services = chaos.dcc, chaos.run, chaos.services
    meeting_id = f"m-kafka-{run}"
    await dcc.publish(topics.MEETING_EXPERTS, meeting_id, meeting_event(meeting_id, chaos.mail("radio", "kafka"),
                                                                         chaos.mail("nucleo", "kafka")))  # fmt: skip
    twin = patient("twin_paul")
    expected_studies = len(chaos.uids(twin.key))
    count = int(rate * load_seconds)
    ids = [f"enr-kafka-{run}-{i:04d}" for i in range(count)]
    pending: asyncio.Queue[str | None] = asyncio.Queue()
    acked: set[str] = set()
    resends = 0
    window: dict[str, float] = {}
    lines: dict[str, dict[str, int]] = {}

    async def generate() -> None:
        started = now()
        for index, enrolment_id in enumerate(ids):
            await pending.put(enrolment_id)
            await asyncio.sleep(max(0.0, started + (index + 1) / rate - now()))
        await pending.put(None)

    async def send() -> None:
        nonlocal resends
        while (enrolment_id := await pending.get()) is not None:
            event = enrolment_event(enrolment_id, meeting_id, twin)
            while True:
                try:
                    await dcc.publish(topics.PATIENT_ENROLLED, enrolment_id, event)
                except (KafkaError, TimeoutError, OSError):
                    resends += 1
                    await asyncio.sleep(0.5)
                else:
                    acked.add(enrolment_id)
                    break

    async def outage() -> None:
        await asyncio.sleep(5)
        async with restarted(chaos.servers, "kafka.sh"):
            # The outage starts once the broker is gone (its clean shutdown takes seconds, during which the services
            # still work and log their work): the log lines counted are those of the outage itself.
            await asyncio.to_thread(chaos.servers.script, "kafka.sh", "stop")
            window["stop"] = now()
            lines["before"] = services.log_lines()
            await asyncio.sleep(outage_seconds)
            lines["after"] = services.log_lines()
            window["start"] = now()
        window["up"] = now()

    await asyncio.gather(generate(), send(), outage())
    sent_at = now()
    found: list[dict[str, object]] = []

    def complete_in(enrolments: list[dict[str, object]]) -> set[str]:
        """The enrolments the whole pipeline has handled: identity matched, catalogue listed."""
        return {
            str(e["enrolment_id"])
            for e in enrolments
            if e.get("identity_status") == "matched" and e.get("catalogued") == expected_studies
        }

    async def all_in() -> bool:
        nonlocal found
        found = await dcc.meeting_enrolments(meeting_id)
        complete = [
            e for e in found if e.get("identity_status") == "matched" and e.get("catalogued") == expected_studies
        ]
        return len({e["enrolment_id"] for e in complete}) >= count

    with contextlib.suppress(TimeoutError):
        await until(all_in, catch_up_seconds, "every enrolment in the gateway", every=1)
    caught_up = now()
    listed = [str(e["enrolment_id"]) for e in found if str(e["enrolment_id"]).startswith(f"enr-kafka-{run}-")]
    complete = complete_in(found)
    lost = len(set(ids) - complete)
    duplicated = len(listed) - len(set(listed))
    outage_length = window["start"] - window["stop"]
    rows = [
        Row(
            "Kafka stop/restart under load",
            f"{count} enrolments at {rate:.0f}/s, Kafka down {outage_seconds:.0f}s: 0 lost, 0 duplicated",
            f"{len(acked)}/{count} acked ({resends} re-sends), {count - lost} in REST with catalogue, {lost} lost, "
            f"{duplicated} duplicated; "
            + (
                f"complete {max(0.0, caught_up - window['up']):.1f}s after Kafka was back "
                f"({caught_up - sent_at:.1f}s after the last ack)"
                if not lost
                else f"still incomplete {caught_up - window['up']:.0f}s after Kafka was back"
            ),
            lost == 0 and duplicated == 0 and len(acked) == count,
        )
    ]
    raw = {name: lines["after"][name] - lines["before"].get(name, 0) for name in lines["after"]}
    rates = {name: per_minute(count, outage_length) for name, count in raw.items()}
    rows.append(
        Row(
            "log lines during Kafka outage",
            f"<= {LOG_LINES_PER_MINUTE_GOAL:.0f} lines/min per service",
            f"{outage_length:.0f}s outage: "
            + ", ".join(f"{name} {raw[name]} ({rates[name]:.1f}/min)" for name in sorted(rates)),
            all(value <= LOG_LINES_PER_MINUTE_GOAL for value in rates.values()),
        )
    )
    return rows


# --- MIRC down -------------------------------------------------------------------------------------------------------


def outage_label(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}min"


async def mirc_outage(chaos: Chaos, seconds: float) -> list[Row]:
    """Studies selected while MIRC is down; once it is back, every one must be available within 30 s."""
    dcc, run = chaos.dcc, chaos.run
    label = outage_label(seconds)
    enrolment_id = f"enr-mirc-{label}-{run}"
    meeting_id = f"m-mirc-{label}-{run}"
    await dcc.publish(topics.MEETING_EXPERTS, meeting_id, meeting_event(meeting_id, chaos.mail("radio", "mirc"),
                                                                         chaos.mail("nucleo", "mirc")))  # fmt: skip
    uids = chaos.uids("beranger_tours", "beranger_blois")
    await dcc.publish(topics.PATIENT_ENROLLED, enrolment_id,
                      enrolment_event(enrolment_id, meeting_id, patient("beranger_tours")))  # fmt: skip
    await catalogued(chaos, enrolment_id, uids)
    for uid in uids:
        await dcc.delete_from_viewer(uid)
    waiting: set[str] = set()
    async with restarted(chaos.servers, "orthanc.sh", "mirc"):
        await asyncio.to_thread(chaos.servers.script, "orthanc.sh", "stop", "mirc")
        down_at = now()
        await dcc.publish(topics.STUDIES_SELECTED, enrolment_id, selection_event(enrolment_id, sorted(uids), False))

        async def all_waiting() -> bool:
            states = await dcc.statuses(enrolment_id)
            waiting.update(uid for uid in uids if states.get(uid, ("", None))[0] == "not_yet_available")
            return waiting == uids

        with contextlib.suppress(TimeoutError):
            await until(all_waiting, max(1.0, seconds - 2), "the studies shown not yet available")
        await asyncio.sleep(max(0.0, down_at + seconds - now()))
    back_at = now()
    recovered = None
    with contextlib.suppress(TimeoutError):
        recovered = (
            await until(lambda: all_available(chaos, enrolment_id, uids), 120, "every study available") - back_at
        )
    return [
        Row(
            f"MIRC down {label}",
            f"{len(uids)} studies selected during the outage: all available <= {RECOVERY_GOAL_SECONDS:.0f}s after",
            (f"all available {recovered:.1f}s after MIRC was back" if recovered is not None else "not all available")
            + f"; {len(waiting)}/{len(uids)} shown not_yet_available during it",
            recovered is not None and recovered <= RECOVERY_GOAL_SECONDS,
        )
    ]


# --- malformed events ------------------------------------------------------------------------------------------------


def consumers_per_topic(groups: Sequence[str]) -> dict[str, int]:
    """How many of the services' consumer groups read each contract topic (groups are
    `proxymage.<service>.<topic>[suffix]`, `ServiceSettings.consumer_group` and `subscribe`)."""
    counts = {}
    for topic in topics.CONTRACT_TOPICS:
        counts[topic] = sum(
            1 for g in groups if g.startswith("proxymage.") and (g.endswith(f".{topic}") or f".{topic}." in g)
        )
    return counts


async def malformed(chaos: Chaos, count: int) -> list[Row]:
    """`count` malformed events spread over every topic a service consumes: each consumer must park each one in
    `<topic>.dlq` with a reason, and go on (healthy, no crash)."""
    dcc = chaos.dcc
    consumers = consumers_per_topic(await dcc.consumer_groups())
    inputs = [topic for topic, n in consumers.items() if n]
    sent: dict[tuple[str, int, int], str] = {}
    for topic, key, kind, value in bad.malformed_events(count, inputs):
        partition, offset = await dcc.publish_raw(topic, key, value)
        sent[(topic, partition, offset)] = kind
    started = now()
    expected = sum(consumers[topic] for topic, _, _ in sent)
    parked: set[tuple[str, int, int, str]] = set()
    without_reason = 0
    reader = AIOKafkaConsumer(
        *(topics.dead_letter_topic(t) for t in inputs),
        bootstrap_servers=dcc.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        deadline = now() + 180
        while len(parked) < expected and now() < deadline:
            batches = await reader.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    headers = {name: value.decode("utf-8", "replace") for name, value in record.headers}
                    with contextlib.suppress(KeyError, ValueError):
                        origin = (headers[DLQ_TOPIC], int(headers[DLQ_PARTITION]), int(headers[DLQ_OFFSET]))
                        if origin in sent:
                            parked.add((*origin, headers.get(DLQ_SERVICE, "")))
                            without_reason += not headers.get(DLQ_REASON)
    finally:
        await reader.stop()
    drained = now() - started
    healthy = [s.name for s in chaos.services.all.values() if s.alive() and http_ok(s.port, "/healthz")]
    crashes = chaos.services.crashes()
    passed = len(parked) == expected and without_reason == 0 and len(healthy) == len(chaos.services.all) and not crashes
    return [
        Row(
            f"{count} malformed events",
            f"all in .dlq with a reason (every consumer of {len(inputs)} input topics); services healthy, 0 crashes",
            f"{len(parked)}/{expected} dead letters in {drained:.1f}s, {without_reason} without reason; "
            f"{len(healthy)}/{len(chaos.services.all)} healthy; {len(crashes)} crashes",
            passed,
        )
    ]
