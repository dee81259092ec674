"""The study-fetcher end to end, in-process, against real Kafka, FerretDB and both Orthanc (MIRC, VIEWER)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from proxymage_dev.pytest_plugin import delete_from_orthanc, orthanc
from proxymage_dev.synthetic import SyntheticStudy, large_study
from proxymage_dev.testing import eventually
from proxymage_shared import reasons, topics
from proxymage_shared.settings import DicomPeer

from .conftest import (
    FETCH_PATIENT,
    Harness,
    absent_from_viewer,
    event_fields,
    fresh_studies,
    started_with,
    store,
    viewer_instances,
)


async def test_catalogue_lists_every_study_of_both_issuers(deployment, seeded_studies: list[SyntheticStudy]) -> None:
    harness, start = await deployment(pacs_display_names={"CH-FICTIF-BLOIS": "unused: InstitutionName wins"})
    await start()
    await harness.identity("enr-cat", [("T0001", "CHU-FICTIF-TOURS"), ("B0042", "CH-FICTIF-BLOIS")])
    catalogue = await harness.catalogue("enr-cat")
    assert catalogue.status == "listed"
    expected = {s.study_instance_uid: s for s in seeded_studies if s.patient.patient_id in ("T0001", "B0042")}
    assert {row.study_instance_uid for row in catalogue.studies} == set(expected)
    for row in catalogue.studies:
        study = expected[row.study_instance_uid]
        assert row.description == study.description
        assert row.date == study.date
        assert set(row.modalities) == set(study.modalities)
        assert row.images == len(study.instances)
        assert row.series == study.series_count
        assert row.pacs == {"T0001": "CHU FICTIF TOURS", "B0042": "CH FICTIF BLOIS"}[study.patient.patient_id]
        assert row.pacs_patient.patient_id == study.patient.patient_id
        assert row.accession_number is not None
    dates = [row.date for row in catalogue.studies]
    assert dates == sorted(dates, reverse=True)

    # A patient id under the wrong issuer lists nothing (the issuer is part of the key)...
    await harness.identity("enr-wrong-issuer", [("T0001", "CH-FICTIF-BLOIS")])
    assert (await harness.catalogue("enr-wrong-issuer")).studies == ()
    # ...and a refresh lists again.
    await harness.refresh("enr-cat")
    again = await harness.catalogue("enr-cat", count=2)
    assert {row.study_instance_uid for row in again.studies} == set(expected)
    assert again.event_id != catalogue.event_id


async def test_three_selected_studies_become_available_with_progress(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    studies = [*fresh_studies(2), large_study(int(harness_seed()), 40, FETCH_PATIENT)]
    harness = await started_with(deployment, mirc, stack_env, studies)
    uids = [s.study_instance_uid for s in studies]
    await harness.select("enr-three", uids)
    for study in studies:
        available = await harness.wait_status("enr-three", study.study_instance_uid, "available")
        assert available.progress is not None
        assert available.progress.done == len(study.instances)
        assert viewer_instances(stack_env, study.study_instance_uid) == len(study.instances)
        versions = [s.version for s in harness.of("enr-three", study.study_instance_uid)]
        assert versions == sorted(set(versions)), "versions strictly increase"
        assert [s.status for s in harness.of("enr-three", study.study_instance_uid)][:2] == ["queued", "retrieving"]
    progress = [
        s
        for s in harness.of("enr-three", studies[2].study_instance_uid)
        if s.status == "retrieving" and s.progress is not None
    ]
    assert progress, "progress events were published"
    assert all(p.progress is not None and p.progress.total == 40 for p in progress)


def harness_seed() -> int:
    import random

    return random.randrange(10**12)


async def test_study_not_in_mirc_becomes_available_once_stored(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    (study,) = fresh_studies(1)
    # Listed in the catalogue, then gone from MIRC (e.g. re-sent by its hospital): "not yet in MIRC".
    await store([study], mirc)
    harness, start = await deployment()
    await start()
    await harness.matched("enr-late")
    delete_from_orthanc(stack_env, "MIRC", study.study_instance_uid)
    absent_from_viewer(stack_env, study)
    await harness.select("enr-late", [study.study_instance_uid])
    waiting = await harness.wait_status("enr-late", study.study_instance_uid, "not_yet_available")
    assert (waiting.reason_code, waiting.reason) == ("not_in_mirc", reasons.text("not_in_mirc"))
    assert waiting.next_attempt_at is not None
    await store([study], mirc)  # the hospital's push reaches MIRC; nobody acts on Proxymage
    await harness.wait_status("enr-late", study.study_instance_uid, "available")
    assert viewer_instances(stack_env, study.study_instance_uid) == len(study.instances)


async def test_mirc_down_then_back(deployment, mirc: DicomPeer, stack_env: dict[str, str]) -> None:
    (study,) = fresh_studies(1)
    await store([study], mirc)
    harness, start = await deployment()
    await start()
    await harness.matched("enr-outage")
    orthanc("stop", "mirc")
    try:
        await harness.select("enr-outage", [study.study_instance_uid])
        waiting = await harness.wait_status("enr-outage", study.study_instance_uid, "not_yet_available", timeout=60)
        assert (waiting.reason_code, waiting.reason) == ("pacs_unreachable", "PACS régional (MIRC) injoignable")
    finally:
        orthanc("start", "mirc")
    await harness.wait_status("enr-outage", study.study_instance_uid, "available", timeout=60)
    assert viewer_instances(stack_env, study.study_instance_uid) == len(study.instances)


@pytest.mark.timeout(420)
async def test_after_an_outage_the_studies_follow_mirc_back_not_the_backoff(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    """Issue 14, point 3 (stops MIRC: run only where the stack may be stopped). With the production backoff,
    MIRC stays down until each job's next slot is 5 min away; once MIRC answers again, each study is shown
    as "de nouveau joignable, reprise" and is available within 30 s, not at its slot."""
    studies = fresh_studies(3)
    await store(studies, mirc)
    absent_from_viewer(stack_env, *studies)
    harness, start = await deployment(
        retry_delays_seconds=(15.0, 60.0, 300.0, 900.0, 1800.0), retry_jitter=0.2, peer_probe_seconds=2.0
    )
    await start()
    await harness.matched("enr-recover")
    uids = [study.study_instance_uid for study in studies]

    def waiting_late(uid: str) -> bool:
        latest = harness.latest("enr-recover", uid)
        return (
            latest is not None
            and (latest.status, latest.reason_code) == ("not_yet_available", "pacs_unreachable")
            and latest.attempts >= 3
        )

    async def all_waiting_late() -> bool:
        return all(waiting_late(uid) for uid in uids)

    orthanc("stop", "mirc")
    try:
        await harness.select("enr-recover", uids)
        await eventually(all_waiting_late, 180, "three failed attempts per study (next slot ~5 min away)")
    finally:
        orthanc("start", "mirc")
    back = time.monotonic()
    for uid in uids:
        available = await harness.wait_status("enr-recover", uid, "available", timeout=30)
        told = [s for s in harness.of("enr-recover", uid) if s.reason_code == "pacs_back"]
        assert told, "the status said MIRC answers again before the retry"
        assert told[0].version < available.version
    elapsed = time.monotonic() - back
    print(f"all {len(uids)} studies available {elapsed:.1f} s after MIRC was back")
    assert elapsed <= 30
    for study in studies:
        assert viewer_instances(stack_env, study.study_instance_uid) == len(study.instances)


async def test_selection_delivered_three_times_makes_one_job_and_one_move_per_study(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    studies = fresh_studies(2)
    harness = await started_with(deployment, mirc, stack_env, studies)
    event = await harness.select("enr-dup", [s.study_instance_uid for s in studies])
    for _ in range(2):
        await harness.select("enr-dup", [], payload=event)
    for study in studies:
        await harness.wait_status("enr-dup", study.study_instance_uid, "available")
    # A sentinel selection on the same partition, after the duplicates: once it is handled, so were they.
    (sentinel,) = fresh_studies(1)
    await store([sentinel], mirc)
    await harness.select("enr-dup-sentinel", [sentinel.study_instance_uid])
    await harness.wait_status("enr-dup-sentinel", sentinel.study_instance_uid, "available")
    assert len(await harness.jobs("enr-dup")) == 2
    for study in studies:
        transfer = await harness.transfer(study.study_instance_uid)
        assert transfer is not None
        assert transfer["moves"] == 1
        statuses = [s.status for s in harness.of("enr-dup", study.study_instance_uid)]
        assert statuses.count("available") == 1
        assert statuses.count("queued") == 1


async def test_same_study_for_two_enrolments_is_moved_once(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    study = large_study(harness_seed(), 60, FETCH_PATIENT)
    await store([study], mirc)
    harness, start = await deployment()
    await start()
    uid = study.study_instance_uid
    await harness.select("enr-a", [uid])
    await harness.select("enr-b", [uid])
    await harness.wait_status("enr-a", uid, "available")
    await harness.wait_status("enr-b", uid, "available")
    transfer = await harness.transfer(uid)
    assert transfer is not None
    assert transfer["moves"] == 1


async def test_removal_stops_the_job_and_purges_when_enabled(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    studies = fresh_studies(2)
    await store(studies, mirc)
    absent_from_viewer(stack_env, *studies)
    viewer_url = f"http://127.0.0.1:{stack_env['PROXYMAGE_LOCAL_VIEWER_HTTP_PORT']}"
    harness, start = await deployment(purge_removed_from_viewer=True, viewer_rest_url=viewer_url)
    await start()
    kept, dropped = (s.study_instance_uid for s in studies)
    await harness.select("enr-rm", [kept, dropped])
    await harness.select("enr-rm-other", [kept])
    for enrolment, uid in (("enr-rm", kept), ("enr-rm", dropped), ("enr-rm-other", kept)):
        await harness.wait_status(enrolment, uid, "available")

    # Removed from one enrolment while another still uses it: removed, but kept in the viewer store.
    await harness.remove("enr-rm", kept)
    removed = await harness.wait_status("enr-rm", kept, "removed")
    # Dropped from the selection, no one else uses it: removed and purged.
    await harness.select("enr-rm", [kept])
    await harness.wait_status("enr-rm", dropped, "removed")

    async def purged() -> bool:
        return viewer_instances(stack_env, dropped) is None

    await eventually(purged, 20, "the dropped study purged from the viewer store")
    assert viewer_instances(stack_env, kept) == len(studies[0].instances)
    # The latest selection includes `kept` again (it is newer than the removal): a new retrieval.
    again = await harness.wait_status("enr-rm", kept, "available", after_version=removed.version)
    assert next(s.status for s in harness.of("enr-rm", kept) if s.version > removed.version) == "queued"
    # The other enrolment's job was never disturbed, and the study was not moved again for `enr-rm`: the
    # earlier verified move is reused while the viewer store still holds the whole study.
    assert [s.status for s in harness.of("enr-rm-other", kept)].count("available") == 1
    transfer = await harness.transfer(kept)
    assert transfer is not None
    assert transfer["moves"] == 1
    assert again.progress is not None
    assert again.progress.done == len(studies[0].instances)


async def test_deadline_passing_fails_the_job(deployment, mirc: DicomPeer, stack_env: dict[str, str]) -> None:
    (study,) = fresh_studies(1)
    await store([study], mirc)
    today = dt.datetime.now(dt.UTC).date()
    seconds_into_day = (dt.datetime.now(dt.UTC) - dt.datetime.combine(today, dt.time(0), dt.UTC)).total_seconds()
    # Deadline ~8 s from now: meeting today, deadline "meeting midnight + elapsed + 8 s", in UTC.
    harness, start = await deployment(
        deadline_timezone="UTC", deadline_after_meeting=dt.timedelta(seconds=seconds_into_day + 8)
    )
    await start()
    await harness.matched("enr-deadline", meeting_date=today)
    delete_from_orthanc(stack_env, "MIRC", study.study_instance_uid)  # listed, then gone from MIRC
    await harness.select("enr-deadline", [study.study_instance_uid])
    failed = await harness.wait_status("enr-deadline", study.study_instance_uid, "failed", timeout=30)
    assert failed.reason_code == "deadline_passed"
    assert failed.reason == reasons.text("deadline_passed", reasons.text("not_in_mirc"))
    # Before the deadline the study was waiting, with the reason (unless a slow start-up used up the time).
    waiting = [s for s in harness.of("enr-deadline", study.study_instance_uid) if s.status == "not_yet_available"]
    assert all(s.reason_code == "not_in_mirc" for s in waiting)
    # A refresh after the deadline does not bring it back.
    await harness.refresh("enr-deadline")
    await harness.catalogue("enr-deadline", count=2)
    latest = harness.latest("enr-deadline", study.study_instance_uid)
    assert latest is not None
    assert latest.status == "failed"


async def test_invalid_selection_goes_to_the_dlq_and_the_next_is_handled(
    deployment, mirc: DicomPeer, stack_env: dict[str, str]
) -> None:
    from aiokafka import AIOKafkaConsumer
    from proxymage_shared.kafka import DLQ_KIND

    harness: Harness
    harness, start = await deployment()
    await start()
    await harness.send(
        topics.STUDIES_SELECTED, {**event_fields(), "enrolment_id": "enr-bad", "study_instance_uids": ["not a uid"]}
    )
    (study,) = fresh_studies(1)
    await store([study], mirc)
    await harness.select("enr-bad", [study.study_instance_uid])
    await harness.wait_status("enr-bad", study.study_instance_uid, "available")
    consumer = AIOKafkaConsumer(
        harness.settings.topic(topics.dead_letter_topic(topics.STUDIES_SELECTED)),
        bootstrap_servers=harness.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert dict(record.headers)[DLQ_KIND] == b"invalid_event"
