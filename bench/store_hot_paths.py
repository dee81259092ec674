"""Benchmark of the local store's hot paths, per service, at several collection sizes (issue 11).

    uv run --frozen python bench/store_hot_paths.py [--sizes 1000,10000,50000] [--samples 200]

For each size N, every service gets a throwaway database (`bench_hot_<N>_<service>_<random>`: the services'
collection names overlap, e.g. `enrolments`, so one database per service), filled with N documents of the
shape the service writes, then each hot path is timed through the service's real store class and method:

- gateway (`ReadModelStore`): `apply(patch)` of a newer study status (patches from `gateway.projection`),
  `enrolment(id)`, `meeting_enrolments(meeting, limit)`;
- study-fetcher (`JobStore`): `claim_due` (the claim `RetrievalWorker.run_once` makes each poll; a few
  queued jobs are due, the claimed lease is given back untimed by `_id` after each op), `save` (a job update
  conditional on its revision);
- expert-notifier (`NotifierStore`): `claim_due` (the slot claim before sending; lease given back untimed),
  the facts read (`get_facts` + `get_meeting`, as the sender's `_facts`), `enrolments_of_meeting`;
- identity-matcher (`EnrolmentStore`): `is_current` (currency check) and `record_outcome` (the conditional
  write of an outcome).

The stored documents are built through the services' own code where cheap: the gateway's `patches()` +
`apply_patch` for read-model documents, the fetcher's `_job_fields`/`_due_at`, the notifier's `_facts_doc` /
`_slot_doc`; the identity-matcher's through the same fields as `EnrolmentStore.accept`. They are bulk-inserted
with `insert_many` in batches of 1000, then each store's `ensure_indexes` runs, as at a service's start.

Each operation is warmed up (20 ops), then timed one op at a time with `time.perf_counter` (no concurrency).
An operation slow enough that `--samples` ops would exceed `--budget-seconds` gets fewer samples (never fewer
than `--min-samples`), and one whose 20 warm-up ops would take over a quarter of the budget is warmed up with
fewer (at least 3); the table's `n` says how many were timed (and `wK` how many warmed up when not 20), so a
run at 50k documents stays in minutes. The databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expert_notifier.domain import (
    Enrolled,
    EnrolmentFacts,
    IdentityFact,
    Notification,
    RoleSlot,
    Selection,
    Stamp,
    StudyFact,
    meeting_end,
)
from expert_notifier.message import PatientFacts
from expert_notifier.store import NotifierStore, SlotRecord, _facts_doc, _slot_doc
from gateway.projection import ENROLMENTS, MEETINGS, RCPS, apply_patch, patches
from gateway.store import ReadModelStore
from identity_matcher.store import EnrolmentStore as IdentityStore
from proxymage_shared.events import (
    BetweenDates,
    CataloguedStudy,
    Event,
    Expert,
    IdentityResolved,
    ImagingCatalogued,
    ImagingFilters,
    MeetingExperts,
    PacsPatientRef,
    Patient,
    PatientEnrolled,
    Person,
    RcpSettings,
    RetrievalStatus,
    StudiesSelected,
    StudyStatusChanged,
)
from proxymage_shared.idempotency import to_ms as ms
from proxymage_shared.mongo import Document, create_mongo_client
from proxymage_shared.settings import ServiceSettings, load_settings
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from study_fetcher.domain import Job, Progress
from study_fetcher.ports import job_key_of as job_key
from study_fetcher.store import FREE, JobStore, _due_at, _job_fields

DEFAULT_MONGO_URL = "mongodb://127.0.0.1:27117/"
BATCH = 1000
WARMUP = 20
ENROLMENTS_PER_MEETING = 20
STUDIES_PER_ENROLMENT = 3  # catalogued studies per enrolment
SEED = 20_261_111
LEASE = dt.timedelta(minutes=5)
FIRST_NAMES = ("Jeanne", "Marie", "Louis", "Paul", "Anne", "Michel", "Claire", "Hélène", "Pierre", "Sophie")
BIRTH_NAMES = ("MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU", "LAURENT")


# --- measurement ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    n: int
    median_ms: float
    p95_ms: float
    warmup: int = WARMUP

    @classmethod
    def of(cls, seconds: list[float], warmup: int) -> Figures:
        ordered = sorted(seconds)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return cls(len(ordered), statistics.median(ordered) * 1000, p95 * 1000, warmup)


SERVICES: tuple[str, ...] = ("gateway", "fetcher", "notifier", "identity")


@dataclass(slots=True)
class Options:
    samples: int
    min_samples: int
    budget_seconds: float
    services: tuple[str, ...] = SERVICES


# One op: `prepare()` (untimed) returns the coroutine factory to time, `after(result)` (untimed) cleans up.
Prepare = Callable[[], Awaitable[Callable[[], Awaitable[Any]]]]
After = Callable[[Any], Awaitable[None]]


async def _nothing(_: Any) -> None:
    return None


async def measure(prepare: Prepare, options: Options, after: After = _nothing) -> Figures:
    async def one() -> float:
        run = await prepare()
        started = time.perf_counter()
        result = await run()
        elapsed = time.perf_counter() - started
        await after(result)
        return elapsed

    # 20 warm-up ops; an op so slow that they would take over a quarter of the budget stops after 3.
    warm: list[float] = []
    while len(warm) < WARMUP and (len(warm) < 3 or sum(warm) < options.budget_seconds / 4):
        warm.append(await one())
    per_op = statistics.median(warm)
    samples = options.samples
    if per_op * samples > options.budget_seconds:
        samples = max(options.min_samples, int(options.budget_seconds / per_op))
    return Figures.of([await one() for _ in range(samples)], len(warm))


# --- realistic data ------------------------------------------------------------------------------------------


def _uid(rng: random.Random) -> str:
    return f"1.2.250.1.59.{rng.randrange(10**8)}.{rng.randrange(10**9)}.{rng.randrange(10**6)}"


@dataclass(slots=True)
class Enrolment:
    """One synthetic enrolment and the events the DCC and the services published about it."""

    enrolment_id: str
    meeting_id: str
    meeting_date: dt.date
    enrolled_at: dt.datetime
    enrolled: PatientEnrolled
    uids: tuple[str, ...]
    selected: tuple[str, ...]
    statuses: dict[str, RetrievalStatus]
    identity_event_id: uuid.UUID = field(default_factory=uuid.uuid4)


def _status(rng: random.Random, index: int, n: int) -> RetrievalStatus:
    """Mostly history (`available`, `removed`), a few failed or waiting, and a handful queued."""
    if index in (n // 8, n // 4, 3 * n // 8):  # a few, the same count at every size (in the first n/2 enrolments)
        return "queued"
    draw = rng.random()
    if draw < 0.70:
        return "available"
    if draw < 0.92:
        return "removed"
    if draw < 0.97:
        return "failed"
    return "not_yet_available"


def make_enrolments(n: int, rng: random.Random, now: dt.datetime) -> list[Enrolment]:
    result: list[Enrolment] = []
    for index in range(n):
        meeting_number = index // ENROLMENTS_PER_MEETING
        meeting_date = (now - dt.timedelta(days=20)).date() + dt.timedelta(days=meeting_number % 40)
        enrolled_at = now - dt.timedelta(days=30, minutes=n - index)
        enrolment_id = f"ENR-{index:07d}"
        meeting_id = f"RCP-ONCO-{meeting_number:05d}"
        enrolled = PatientEnrolled(
            event_id=uuid.uuid4(),
            occurred_at=enrolled_at,
            enrolment_id=enrolment_id,
            meeting_id=meeting_id,
            rcp_id=f"RCP-{meeting_number % 3}",
            meeting_title=f"RCP thoracique {meeting_number}",
            meeting_date=meeting_date,
            centre="CHU Fictif",
            patient=Patient(
                birth_name=rng.choice(BIRTH_NAMES),
                used_name=None,
                first_name=rng.choice(FIRST_NAMES),
                birth_date=dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(20_000)),
                sex=rng.choice(("M", "F")),
            ),
            consent=True,
            requested_by=Person(name="Dr Claire Moulin"),
        )
        uids = tuple(_uid(rng) for _ in range(STUDIES_PER_ENROLMENT))
        selected = uids[: rng.choice((1, 2, 3))]
        statuses = {uid: _status(rng, index, n) for uid in selected}
        result.append(
            Enrolment(enrolment_id, meeting_id, meeting_date, enrolled_at, enrolled, uids, selected, statuses)
        )
    return result


def _pacs_patient(enrolment: Enrolment) -> PacsPatientRef:
    return PacsPatientRef(patient_id=f"IPP{enrolment.enrolment_id[4:]}", issuer="CHU-FICTIF")


def gateway_events(enrolment: Enrolment) -> list[Event]:
    at = enrolment.enrolled_at
    patient = _pacs_patient(enrolment)
    events: list[Event] = [
        enrolment.enrolled,
        IdentityResolved(
            event_id=enrolment.identity_event_id,
            occurred_at=at + dt.timedelta(seconds=2),
            enrolment_id=enrolment.enrolment_id,
            source_event_id=enrolment.enrolled.event_id,
            source_occurred_at=at,
            meeting_id=enrolment.meeting_id,
            meeting_date=enrolment.meeting_date,
            status="matched",
            pacs_patients=(patient,),
        ),
        ImagingCatalogued(
            event_id=uuid.uuid4(),
            occurred_at=at + dt.timedelta(seconds=5),
            enrolment_id=enrolment.enrolment_id,
            status="listed",
            studies=tuple(
                CataloguedStudy(
                    study_instance_uid=uid,
                    description=("TDM THORAX-ABDOMEN-PELVIS", "TEP-TDM FDG", "IRM CEREBRALE")[number],
                    pacs="MIRC",
                    date=enrolment.meeting_date - dt.timedelta(days=30 * (number + 1)),
                    modalities=(("CT",), ("PT", "CT"), ("MR",))[number],
                    images=(420, 690, 180)[number],
                    series=(4, 6, 9)[number],
                    accession_number=f"ACC{number}{enrolment.enrolment_id[4:]}",
                    pacs_patient=patient,
                )
                for number, uid in enumerate(enrolment.uids)
            ),
        ),
        StudiesSelected(
            event_id=uuid.uuid4(),
            occurred_at=at + dt.timedelta(minutes=10),
            enrolment_id=enrolment.enrolment_id,
            study_instance_uids=enrolment.selected,
            expertise_requested=True,
        ),
    ]
    for uid, status in enrolment.statuses.items():
        events.append(
            StudyStatusChanged(
                event_id=uuid.uuid4(),
                occurred_at=at + dt.timedelta(minutes=15),
                enrolment_id=enrolment.enrolment_id,
                study_instance_uid=uid,
                status=status,
                version=3 if status != "queued" else 1,
                attempts=0 if status == "queued" else 1,
            )
        )
    return events


def meeting_events(enrolments: list[Enrolment]) -> list[Event]:
    events: list[Event] = []
    seen: set[str] = set()
    for enrolment in enrolments:
        if enrolment.meeting_id in seen:
            continue
        seen.add(enrolment.meeting_id)
        events.append(
            MeetingExperts(
                event_id=uuid.uuid4(),
                occurred_at=enrolment.enrolled_at - dt.timedelta(days=1),
                meeting_id=enrolment.meeting_id,
                rcp_id=enrolment.enrolled.rcp_id,
                title=enrolment.enrolled.meeting_title,
                date=enrolment.meeting_date,
                centre="CHU Fictif",
                on_call_radiologist=Expert(name="Dr Radio", email="radio@chu-fictif.mssante.test"),
                on_call_nuclear_physician=Expert(name="Dr Nucleaire", email="nucleaire@chu-fictif.mssante.test"),
            )
        )
    for rcp in range(3):
        events.append(
            RcpSettings(
                event_id=uuid.uuid4(),
                occurred_at=enrolments[0].enrolled_at - dt.timedelta(days=10),
                rcp_id=f"RCP-{rcp}",
                title=f"RCP {rcp}",
                centre="CHU Fictif",
                imaging=ImagingFilters(
                    modalities=("CT", "PT", "MR"),
                    date_filter=BetweenDates(
                        kind="between", date_from=dt.date(2020, 1, 1), date_to=dt.date(2030, 1, 1)
                    ),
                ),
            )
        )
    return events


async def insert_all(database: AsyncDatabase[Document], collection: str, documents: list[Document]) -> None:
    for start in range(0, len(documents), BATCH):
        await database[collection].insert_many(documents[start : start + BATCH], ordered=False)


# --- per service -------------------------------------------------------------------------------------------

Row = tuple[str, Figures]


async def bench_gateway(
    database: AsyncDatabase[Document], enrolments: list[Enrolment], rng: random.Random, options: Options
) -> list[Row]:
    documents: dict[str, dict[str, Document]] = {ENROLMENTS: {}, MEETINGS: {}, RCPS: {}}
    for event in meeting_events(enrolments) + [e for enrolment in enrolments for e in gateway_events(enrolment)]:
        for patch in patches(event):
            stored = documents[patch.collection]
            stored[patch.key] = apply_patch(stored.get(patch.key), patch)
    for name, by_key in documents.items():
        await insert_all(database, name, list(by_key.values()))
    store = ReadModelStore(database)
    await store.ensure_indexes()

    versions: dict[tuple[str, str], int] = {}

    async def apply_newer_status() -> Callable[[], Awaitable[Any]]:
        enrolment = rng.choice(enrolments)
        uid = rng.choice(enrolment.selected)
        version = versions.get((enrolment.enrolment_id, uid), 10) + 1
        versions[(enrolment.enrolment_id, uid)] = version
        event = StudyStatusChanged(
            event_id=uuid.uuid4(),
            occurred_at=dt.datetime.now(dt.UTC),
            enrolment_id=enrolment.enrolment_id,
            study_instance_uid=uid,
            status=enrolment.statuses[uid],
            version=version,
            attempts=1,
        )
        (patch,) = patches(event)
        return lambda: store.apply(patch)

    async def read_enrolment() -> Callable[[], Awaitable[Any]]:
        key = rng.choice(enrolments).enrolment_id
        return lambda: store.enrolment(key)

    async def read_meeting() -> Callable[[], Awaitable[Any]]:
        meeting_id = rng.choice(enrolments).meeting_id
        return lambda: store.meeting_enrolments(meeting_id, 1000)

    async def check_applied(result: Any) -> None:
        if result is None:
            raise RuntimeError("gateway apply: a newer patch was found stale")

    return [
        ("gateway apply(patch) [study status]", await measure(apply_newer_status, options, check_applied)),
        ("gateway enrolment(id)", await measure(read_enrolment, options)),
        ("gateway meeting_enrolments [by meeting]", await measure(read_meeting, options)),
    ]


async def bench_fetcher(
    database: AsyncDatabase[Document],
    enrolments: list[Enrolment],
    rng: random.Random,
    options: Options,
    now: dt.datetime,
    n: int,
) -> list[Row]:
    # n jobs (one per selected study, enrolments taken in order until n), in the shape `JobStore.insert` and
    # `JobStore.save` write.
    documents: list[Document] = []
    for enrolment in enrolments:
        for uid, status in enrolment.statuses.items():
            if len(documents) >= n:
                break
            selected_at = ms(enrolment.enrolled_at + dt.timedelta(minutes=10))
            deadline = ms(dt.datetime.combine(enrolment.meeting_date, dt.time(7), tzinfo=dt.UTC))
            job = Job(
                state=status,
                version=1 if status == "queued" else 3,
                attempts=0 if status == "queued" else 1,
                next_attempt_at=ms(now + dt.timedelta(minutes=30)) if status == "not_yet_available" else None,
                deadline=deadline,
                reason=None,
                progress=None if status == "queued" else Progress(690 if status == "available" else 120, 690),
                selected_at=selected_at,
                removed_at=ms(selected_at + dt.timedelta(days=1)) if status == "removed" else None,
                reason_code="not_in_mirc" if status == "failed" else None,
                owner=(f"IPP{enrolment.enrolment_id[4:]}", "CHU-FICTIF"),
            )
            written = ms(now - dt.timedelta(minutes=1)) if status == "queued" else selected_at
            documents.append(
                {
                    "_id": job_key(enrolment.enrolment_id, uid),
                    "enrolment_id": enrolment.enrolment_id,
                    "study_uid": uid,
                    **_job_fields(job),
                    "revision": 4,
                    "due_at": _due_at(job, written, FREE),
                    "lease_owner": None,
                    "lease_until": FREE,
                    "waiting": False,
                    "unpublished": False,
                    "updated_at": written,
                }
            )
    await insert_all(database, "jobs", documents)
    jobs = JobStore(database)
    await jobs.ensure_indexes()
    collection = database["jobs"]
    keys = [str(doc["_id"]) for doc in documents]
    queued = sum(1 for doc in documents if doc["state"] == "queued")
    owner = f"bench-{uuid.uuid4().hex[:8]}"

    async def claim() -> Callable[[], Awaitable[Any]]:
        moment = ms(dt.datetime.now(dt.UTC))
        return lambda: jobs.claim_due(owner, moment, LEASE)

    async def give_back(result: Any) -> None:
        if result is None:
            raise RuntimeError(f"fetcher claim_due found no due job ({queued} queued)")
        await collection.update_one({"_id": result.job_key}, {"$set": {"lease_owner": None, "lease_until": FREE}})

    async def save() -> Callable[[], Awaitable[Any]]:
        stored = await jobs.get(rng.choice(keys))
        if stored is None:
            raise RuntimeError("fetcher job vanished")
        # A newer selection of a live job records its time only (domain table, note [1]): a real, small update.
        job = dataclasses.replace(stored.job, selected_at=ms(dt.datetime.now(dt.UTC)))
        return lambda: jobs.save(stored, job, ms(dt.datetime.now(dt.UTC)))

    async def check_saved(result: Any) -> None:
        if result is None:
            raise RuntimeError("fetcher save lost its revision")

    return [
        (f"fetcher claim_due [poll; {queued} due]", await measure(claim, options, give_back)),
        ("fetcher save(job) [status update]", await measure(save, options, check_saved)),
    ]


async def bench_notifier(
    database: AsyncDatabase[Document],
    enrolments: list[Enrolment],
    rng: random.Random,
    options: Options,
    now: dt.datetime,
) -> list[Row]:
    zone = dt.UTC
    facts_docs: list[Document] = []
    slot_docs: list[Document] = []
    meetings: dict[str, Document] = {}
    due_at = {len(enrolments) // 4, len(enrolments) // 2, 3 * len(enrolments) // 4}
    for index, enrolment in enumerate(enrolments):
        at = ms(enrolment.enrolled_at)
        facts = EnrolmentFacts(
            enrolment_id=enrolment.enrolment_id,
            enrolled=Enrolled(
                stamp=Stamp.of(at, enrolment.enrolled.event_id),
                meeting_id=enrolment.meeting_id,
                meeting_date=enrolment.meeting_date,
                consent=True,
                patient=PatientFacts("Mme", f"{enrolment.enrolled.patient.first_name} X.", "Dr Claire Moulin"),
            ),
            identity=IdentityFact(
                source_at=at,
                at=ms(at + dt.timedelta(seconds=2)),
                event_id=str(enrolment.identity_event_id),
                status="matched",
                source_event_id=str(enrolment.enrolled.event_id),
            ),
            selection=Selection(
                stamp=Stamp.of(ms(at + dt.timedelta(minutes=10)), uuid.uuid4()),
                expertise_requested=True,
                study_instance_uids=enrolment.selected,
            ),
            studies=tuple(
                sorted(
                    (StudyFact(uid, 3, status) for uid, status in enrolment.statuses.items()),
                    key=lambda s: s.study_instance_uid,
                )
            ),
        )
        facts_docs.append(
            {"_id": enrolment.enrolment_id, **_facts_doc(facts), "purge_at": ms(at + dt.timedelta(days=60)), "rev": 3}
        )
        closes_at = meeting_end(enrolment.meeting_date, zone)
        email = "radio@chu-fictif.mssante.test"
        # Most roles were sent long ago; three are due now (a retry), some wait for their study.
        if index in due_at:
            item = Notification(
                email, "Dr Radio", "pending", attempts=1, next_attempt_at=ms(now - dt.timedelta(minutes=1))
            )
            mode = "wanted"
        elif index % 20 == 3:
            item = Notification(email, "Dr Radio", "waiting")
            mode = "waiting"
        else:
            item = Notification(email, "Dr Radio", "sent", attempts=1, sent_at=ms(at + dt.timedelta(hours=1)))
            mode = "wanted"
        slot = RoleSlot(
            enrolment_id=enrolment.enrolment_id,
            role="radiologist",
            meeting_id=enrolment.meeting_id,
            mode=mode,
            current=email if mode == "wanted" else None,
            notifications=(item,),
            closes_at=closes_at,
        )
        slot_docs.append(_slot_doc(SlotRecord(slot=slot, rev=3, version=2, view=slot.view(), view_at=at)))
        meetings.setdefault(
            enrolment.meeting_id,
            {
                "_id": enrolment.meeting_id,
                "event_id": str(uuid.uuid4()),
                "title": enrolment.enrolled.meeting_title,
                "date": enrolment.meeting_date.isoformat(),
                "centre": "CHU Fictif",
                "experts": {
                    "radiologist": {"name": "Dr Radio", "email": email},
                    "nuclear_physician": {"name": "Dr Nucleaire", "email": "nucleaire@chu-fictif.mssante.test"},
                },
                "event_at": ms(at - dt.timedelta(days=1)),
            },
        )
    await insert_all(database, "enrolments", facts_docs)
    await insert_all(database, "slots", slot_docs)
    await insert_all(database, "meetings", list(meetings.values()))
    store = NotifierStore(database)
    await store.ensure_indexes()
    slots = database["slots"]
    due = sum(1 for doc in slot_docs if doc["next_due_at"] is not None)
    token = uuid.uuid4().hex

    async def claim() -> Callable[[], Awaitable[Any]]:
        moment = ms(dt.datetime.now(dt.UTC))
        return lambda: store.claim_due(moment, LEASE, token)

    async def give_back(result: Any) -> None:
        if result is None:
            raise RuntimeError(f"notifier claim_due found no due slot ({due} due)")
        key = f"{result.slot.enrolment_id}|{result.slot.role}"
        await slots.update_one({"_id": key}, {"$set": {"lease_until": None, "lease_token": None}})

    async def facts_read() -> Callable[[], Awaitable[Any]]:
        enrolment = rng.choice(enrolments)

        async def run() -> Any:  # the sender's `_facts`: the facts, then their meeting
            facts = await store.get_facts(enrolment.enrolment_id)
            meeting_id = facts.enrolled.meeting_id if facts is not None and facts.enrolled is not None else None
            return facts, (await store.get_meeting(meeting_id) if meeting_id else None)

        return run

    async def of_meeting() -> Callable[[], Awaitable[Any]]:
        meeting_id = rng.choice(enrolments).meeting_id
        return lambda: store.enrolments_of_meeting(meeting_id)

    return [
        (f"notifier claim_due [slot; {due} due]", await measure(claim, options, give_back)),
        ("notifier facts read [get_facts+get_meeting]", await measure(facts_read, options)),
        ("notifier enrolments_of_meeting", await measure(of_meeting, options)),
    ]


async def bench_identity(
    database: AsyncDatabase[Document], enrolments: list[Enrolment], rng: random.Random, options: Options
) -> list[Row]:
    documents: list[Document] = []
    for enrolment in enrolments:
        event = enrolment.enrolled
        resolved_at = ms(enrolment.enrolled_at + dt.timedelta(seconds=2))
        # The fields `EnrolmentStore.accept` writes, then those `record_outcome` sets.
        documents.append(
            {
                "_id": enrolment.enrolment_id,
                "kind": "enrolled",
                "event_id": str(event.event_id),
                "occurred_at": ms(event.occurred_at),
                "event": event.model_dump(mode="json", by_alias=True),
                "meeting_date": event.meeting_date.isoformat(),
                "consent": event.consent,
                "status": "matched",
                "attempts": 1,
                "resolutions": 1,
                "next_attempt_at": None,
                "lease_until": None,
                "outcome_event_id": str(enrolment.identity_event_id),
                "resolved_at": resolved_at,
            }
        )
    await insert_all(database, "enrolments", documents)
    store = IdentityStore(database)
    await store.ensure_indexes()

    async def is_current() -> Callable[[], Awaitable[Any]]:
        enrolment = rng.choice(enrolments)
        return lambda: store.is_current(enrolment.enrolment_id, str(enrolment.enrolled.event_id))

    async def record() -> Callable[[], Awaitable[Any]]:
        enrolment = rng.choice(enrolments)
        now = ms(dt.datetime.now(dt.UTC))
        return lambda: store.record_outcome(
            enrolment.enrolment_id,
            str(enrolment.enrolled.event_id),
            "matched",
            attempts=1,
            next_attempt_at=None,
            outcome_event_id=str(uuid.uuid4()),
            now=now,
        )

    async def check(result: Any) -> None:
        if result is not True:
            raise RuntimeError("identity: the enrolment's current event was not found")

    return [
        ("identity is_current [currency check]", await measure(is_current, options, check)),
        ("identity record_outcome [conditional write]", await measure(record, options, check)),
    ]


# --- run ---------------------------------------------------------------------------------------------------


def mongo_url() -> str:
    """The Mongo URL of the local stack's env file (PROXYMAGE_ENV_FILE, else deploy/local/local.env)."""
    if not os.environ.get("PROXYMAGE_ENV_FILE"):
        candidate = Path(__file__).resolve().parents[1] / "deploy" / "local" / "local.env"
        if candidate.exists():
            os.environ["PROXYMAGE_ENV_FILE"] = str(candidate)
    if not os.environ.get("PROXYMAGE_ENV_FILE") and not os.environ.get("PROXYMAGE_MONGO_URL"):
        return DEFAULT_MONGO_URL
    return load_settings(ServiceSettings).mongo_url.get_secret_value()


async def run_size(client: AsyncMongoClient[Document], n: int, options: Options) -> tuple[dict[str, Figures], float]:
    rng = random.Random(SEED + n)  # noqa: S311 - synthetic data, not security
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    enrolments = make_enrolments(n, rng, now)
    tag = uuid.uuid4().hex[:8]
    names = {service: f"bench_hot_{n}_{service}_{tag}" for service in options.services}
    rows: list[Row] = []
    try:
        for service, database_name in names.items():
            database = client[database_name]
            loaded = time.perf_counter()
            if service == "gateway":
                result = await bench_gateway(database, enrolments, rng, options)
            elif service == "fetcher":
                # n jobs: one per selected study (two per enrolment on average), enrolments taken in order.
                result = await bench_fetcher(database, enrolments, rng, options, now, n)
            elif service == "notifier":
                result = await bench_notifier(database, enrolments, rng, options, now)
            else:
                result = await bench_identity(database, enrolments, rng, options)
            rows += result
            print(f"  n={n:>6} {service:<9} done in {time.perf_counter() - loaded:6.1f} s", file=sys.stderr, flush=True)
    finally:
        for database_name in names.values():
            await client.drop_database(database_name)
    return {name: figures for name, figures in rows}, time.perf_counter() - started


def _generic(name: str) -> str:
    """An operation's name without its per-size detail (`[poll; 3 due]` -> `[poll]`)."""
    return re.sub(r";[^\]]*\]", "]", name)


def print_table(sizes: list[int], results: dict[int, dict[str, Figures]]) -> None:
    operations: list[str] = []
    for size in sizes:
        for name in results[size]:
            if _generic(name) not in operations:
                operations.append(_generic(name))
    by_op = {size: {_generic(name): figures for name, figures in results[size].items()} for size in sizes}
    first, last = sizes[0], sizes[-1]
    header = f"{'operation':<46}" + "".join(f" | {f'{size} docs: n  median    p95':>28}" for size in sizes)
    header += f" | {f'{last}/{first} med':>10} {'p95':>6}"
    print(header)
    print("-" * len(header))
    for op in operations:
        line = f"{op:<46}"
        for size in sizes:
            figures = by_op[size][op]
            count = f"{figures.n}" if figures.warmup == WARMUP else f"{figures.n} (w{figures.warmup})"
            line += f" | {count:>12} {figures.median_ms:>7.2f} {figures.p95_ms:>7.2f}"
        a, b = by_op[first][op], by_op[last][op]
        line += f" | {b.median_ms / a.median_ms:>10.2f} {b.p95_ms / a.p95_ms:>6.2f}"
        print(line)
    print(f"(times in ms; n = timed ops after {WARMUP} warm-up ops, or after (wK) K when they exceeded the budget)")
    for size in sizes:
        details = [name for name in results[size] if name != _generic(name)]
        print(f"  at {size}: " + ", ".join(details))
    print()
    for op in operations:
        a, b = by_op[first][op], by_op[last][op]
        ratio = b.median_ms / a.median_ms
        verdict = "OK " if ratio <= 2 else "NOT"
        print(f"{verdict} {op}: median at {last} = {ratio:.2f}x {first} ({'<=' if ratio <= 2 else '>'} 2x)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000,50000", help="comma-separated document counts")
    parser.add_argument("--samples", type=int, default=200, help="timed ops per operation and size")
    parser.add_argument("--min-samples", type=int, default=10, help="fewest timed ops of a slow operation")
    parser.add_argument(
        "--services", default=",".join(SERVICES), help=f"comma-separated, of {', '.join(SERVICES)} (default: all)"
    )
    parser.add_argument(
        "--budget-seconds", type=float, default=45.0, help="time per operation and size above which samples drop"
    )
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    services = tuple(service for service in SERVICES if service in args.services.split(","))
    if not services:
        parser.error(f"--services: none of {', '.join(SERVICES)}")
    options = Options(args.samples, min(args.min_samples, args.samples), args.budget_seconds, services)
    url = mongo_url()
    client = create_mongo_client(url, timeout_ms=30_000, app_name="proxymage-bench-hot-paths")
    started = time.perf_counter()
    results: dict[int, dict[str, Figures]] = {}
    try:
        for size in sizes:
            results[size], took = await run_size(client, size, options)
            print(f"size {size}: {took:.1f} s", file=sys.stderr, flush=True)
    finally:
        await client.close()
    print(f"store hot paths on {url.split('@')[-1]} (sizes {', '.join(map(str, sizes))})")
    print_table(sizes, results)
    print(f"total run time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
