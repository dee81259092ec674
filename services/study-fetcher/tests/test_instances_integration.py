"""Several fetcher instances: work shared by two instances (each study moved once), and a fetcher killed
with SIGKILL in the middle of a move (a second one takes the job over once the lease expires, within ~15 s,
and says so: "reprise après interruption")."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from proxymage_dev.pytest_plugin import free_port
from proxymage_dev.synthetic import large_study
from proxymage_dev.testing import eventually
from proxymage_shared import reasons
from proxymage_shared.settings import DicomPeer

from .conftest import (
    FETCH_PATIENT,
    SENSITIVE,
    absent_from_viewer,
    fresh_studies,
    ready_at,
    spawn_fetcher,
    store,
    viewer_instances,
)

# A fixed seed: the 300-instance study (150 MB) is stored into MIRC once and reused by later runs.
KILL_STUDY_SEED = 90_411


async def test_two_fetchers_ten_studies_each_moved_once(deployment, mirc: DicomPeer, stack_env: dict[str, str]) -> None:
    studies = fresh_studies(10)
    await store(studies, mirc)
    harness, start = await deployment()
    await start()
    await start()
    uids = [s.study_instance_uid for s in studies]
    # Ten enrolments, each selecting two neighbouring studies: every study is wanted by two enrolments,
    # whose events land on different partitions, so on either instance.
    selections = {f"enr-pair-{k}": [uids[k], uids[(k + 1) % 10]] for k in range(10)}
    for enrolment, chosen in selections.items():
        await harness.select(enrolment, chosen)
    for enrolment, chosen in selections.items():
        for uid in chosen:
            await harness.wait_status(enrolment, uid, "available", timeout=60)
    for study in studies:
        transfer = await harness.transfer(study.study_instance_uid)
        assert transfer is not None
        assert transfer["moves"] == 1, f"{study.study_instance_uid} moved {transfer['moves']} times"
        assert viewer_instances(stack_env, study.study_instance_uid) == len(study.instances)
    for enrolment, chosen in selections.items():
        for uid in chosen:
            statuses = [s.status for s in harness.of(enrolment, uid)]
            assert statuses.count("available") == 1


def _spawn(harness_settings_prefix: str, database: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        "PROXYMAGE_TOPIC_PREFIX": harness_settings_prefix,
        "PROXYMAGE_MONGO_DATABASE": database,
        "PROXYMAGE_HEALTH_PORT": str(port),
        # The default lease (15 s) and renewal (5 s): the takeover measured is the one deployed.
        "PROXYMAGE_POLL_SECONDS": "0.2",
        "PROXYMAGE_TRANSFER_WAIT_SECONDS": "0.5",
        "PROXYMAGE_RETRY_DELAYS_SECONDS": "[0.5, 1.0]",
        "PROXYMAGE_LOG_LEVEL": "DEBUG",
    }
    return spawn_fetcher(env, log_path)


async def test_fetcher_killed_mid_move_is_taken_over(
    deployment, mirc: DicomPeer, stack_env: dict[str, str], tmp_path: Path
) -> None:
    study = large_study(KILL_STUDY_SEED, 300, FETCH_PATIENT)
    await store([study], mirc)
    absent_from_viewer(stack_env, study)
    uid = study.study_instance_uid
    harness, _ = await deployment()
    prefix, database = harness.settings.topic_prefix, harness.settings.database_name()
    log_path = tmp_path / "processes.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        first_port = free_port()
        processes.append(_spawn(prefix, database, first_port, log_path))
        await eventually(lambda: ready_at(first_port), 60, "the first fetcher to be ready")
        await harness.select("enr-kill", [uid])

        async def moving() -> bool:
            return any(
                s.status == "retrieving" and s.progress is not None and 0 < s.progress.done < s.progress.total
                for s in harness.of("enr-kill", uid)
            )

        await eventually(moving, 60, "the move to be under way")
        processes[0].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.to_thread(processes[0].wait, 10)
        latest = harness.latest("enr-kill", uid)
        assert latest is not None
        assert latest.status == "retrieving", "killed in the middle of the move"

        second_port = free_port()
        processes.append(_spawn(prefix, database, second_port, log_path))
        resumed = await harness.wait_status(
            "enr-kill", uid, "retrieving", timeout=60, reason=lambda text: text == reasons.text("resumed")
        )
        resumed_after = time.monotonic() - killed_at
        assert (resumed.attempts, resumed.reason_code, resumed.progress) == (2, "resumed", None)
        available = await harness.wait_status("enr-kill", uid, "available", timeout=60)
        available_after = time.monotonic() - killed_at
        print(f"killed mid-move: resumed after {resumed_after:.1f} s, available after {available_after:.1f} s")
        # Within the lease (15 s, from the last renewal before the kill) and a poll, plus the move itself.
        assert resumed_after <= 15 + 5
        assert available.attempts == 2  # the second fetcher's attempt, after the lease expired
        assert viewer_instances(stack_env, uid) == 300
        transfer = await harness.transfer(uid)
        assert transfer is not None
        assert transfer["moves"] == 2
        versions = [s.version for s in harness.of("enr-kill", uid)]
        assert len(versions) == len(set(versions))
        assert max(versions) == available.version
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(process.wait, 30)
    logged = log_path.read_text()
    assert '"event": "retrieval_attempt"' in logged
    leaked = [value for value in SENSITIVE if value.upper() in logged.upper()]
    assert leaked == [], f"patient data in the service's logs: {leaked}"
