"""`python -m proxymage_dev.bench.scale_out`: 1 vs 2 vs 3 fetcher processes retrieving the same 30 studies.

Stores 30 CT studies (`--instances` slices each, 512x512 16-bit) of the benchmark patient into MIRC (fixed seeds:
stored once, reused by later runs). Then, for each process count, a fresh round: its own topic prefix, database
and association budget; the studies deleted from the viewer store; N `python -m study_fetcher` processes started
and ready; six enrolments matched (catalogues recorded). The clock starts when the six selections (five studies
each) are published and stops when the 30 `available` statuses have been consumed. Meanwhile the CPU time of
MIRC's and the viewer store's Orthanc, the fetchers, FerretDB and Kafka is read from /proc, to tell where the
bottleneck is. Prints each round's wall time, the ratios to one process, and the CPU each used (in cores: CPU
seconds per wall second), with the machine's load average.

The association budget is on (MIRC's `max_associations`, default 4, `--budget`): it caps what more processes
can do against MIRC, by design.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from proxymage_dev.bench.gateway import delete_topics
from proxymage_dev.bench.study_fetcher import (
    _delete_from_viewer,
    _env_file,
    _viewer_count,
    _viewer_rest_url,
    catalogue_listed,
    publish_matched,
)
from proxymage_dev.pytest_plugin import ROOT, free_port
from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import SyntheticStudy, large_study
from proxymage_shared import topics
from proxymage_shared.events import StudyStatusChanged
from proxymage_shared.kafka import ensure_topics
from proxymage_shared.mongo import create_mongo_client
from proxymage_shared.settings import load_settings
from proxymage_shared.topics import topic_specs
from study_fetcher.settings import Settings

SEED_BASE: Final = 20_261_200
STUDIES: Final = 30
ENROLMENTS: Final = 6
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
# The local stack's processes whose CPU is sampled, by their pid files under var/run.
STACK_PIDS: Final = {
    "MIRC (Orthanc)": "orthanc-mirc.pid",
    "viewer store (Orthanc)": "orthanc-viewer.pid",
    "FerretDB": "ferretdb.pid",
    "Kafka": "kafka.pid",
}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of proc(5))


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def _stack_pids() -> dict[str, int]:
    found: dict[str, int] = {}
    for name, file in STACK_PIDS.items():
        with contextlib.suppress(OSError, ValueError):
            found[name] = int((ROOT / "var" / "run" / file).read_text().split()[0])
    return found


@dataclass
class Round:
    processes: int
    seconds: float
    cores: dict[str, float]  # CPU seconds per wall second, by process group
    machine: float  # the machine's busy fraction (all cores, every process on it)


class CpuMeter:
    """CPU used between `start` and `stop` by the stack's processes and the given fetcher pids."""

    def __init__(self, fetchers: list[int]) -> None:
        self._pids = {**_stack_pids(), **{f"fetcher {k + 1}": pid for k, pid in enumerate(fetchers)}}
        self._before: dict[str, float] = {}
        self._machine_before = (0.0, 0.0)
        self._started = 0.0

    def start(self) -> None:
        self._before = {name: _cpu_seconds(pid) for name, pid in self._pids.items()}
        self._machine_before = _machine_busy()
        self._started = time.perf_counter()

    def stop(self) -> tuple[dict[str, float], float]:
        wall = time.perf_counter() - self._started
        used = {name: (_cpu_seconds(pid) - self._before[name]) / wall for name, pid in self._pids.items()}
        busy, total = _machine_busy()
        machine = (busy - self._machine_before[0]) / max(total - self._machine_before[1], 1e-9)
        fetchers = sum(value for name, value in used.items() if name.startswith("fetcher"))
        cores = {name: value for name, value in used.items() if not name.startswith("fetcher")}
        cores["fetchers (all)"] = fetchers
        return cores, machine


def _spawn(env_overrides: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **env_overrides}
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "study_fetcher"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )


async def _ready(port: int, deadline_seconds: float = 90) -> None:
    deadline = time.perf_counter() + deadline_seconds
    async with httpx.AsyncClient(trust_env=False) as client:
        while time.perf_counter() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"a fetcher (health port {port}) was not ready in time")


async def _match(settings: Settings, producer: AIOKafkaProducer, mongo: Any, enrolment_ids: list[str]) -> None:
    """The identity-matcher's outcome for each enrolment (the benchmark patient), until its catalogue is listed."""
    expected = {enrolment_id: await publish_matched(settings, producer, enrolment_id) for enrolment_id in enrolment_ids}
    enrolments = mongo[settings.database_name()]["enrolments"]
    deadline = time.perf_counter() + 120
    while expected and time.perf_counter() < deadline:
        for enrolment_id, event_id in list(expected.items()):
            if await catalogue_listed(enrolments, enrolment_id, event_id):
                del expected[enrolment_id]
        await asyncio.sleep(0.1)
    if expected:
        raise SystemExit(f"catalogues not listed in time: {sorted(expected)}")


async def _round(
    processes: int, studies: list[SyntheticStudy], rest: httpx.Client, budget: int, log_dir: Path
) -> Round:
    run_id = uuid.uuid4().hex[:8]
    settings = load_settings(
        Settings, topic_prefix=f"bench-scale-{run_id}.", mongo_database=f"bench_scale_{run_id}", health_port=0
    )
    await ensure_topics(
        settings.kafka_bootstrap_servers, topic_specs(settings.topic_partitions, prefix=settings.topic_prefix)
    )
    for study in studies:
        await asyncio.to_thread(_delete_from_viewer, rest, study.study_instance_uid)
    ports = [free_port() for _ in range(processes)]
    env = {
        "PROXYMAGE_TOPIC_PREFIX": settings.topic_prefix,
        "PROXYMAGE_MONGO_DATABASE": settings.database_name(),
        "PROXYMAGE_PACS_BUDGET_DATABASE": f"bench_scale_budget_{run_id}",
        "PROXYMAGE_MIRC__MAX_ASSOCIATIONS": str(budget),
        "PROXYMAGE_LOG_LEVEL": "WARNING",
    }
    fetchers = [
        _spawn({**env, "PROXYMAGE_HEALTH_PORT": str(port)}, log_dir / f"scale-{processes}-{k}.log")
        for k, port in enumerate(ports)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        settings.topic(topics.STUDY_STATUS),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    mongo = create_mongo_client(settings.mongo_url.get_secret_value())
    await producer.start()
    await consumer.start()
    try:
        for port in ports:
            await _ready(port)
        enrolment_ids = [f"bench-scale-{run_id}-{k}" for k in range(ENROLMENTS)]
        await _match(settings, producer, mongo, enrolment_ids)
        uids = [study.study_instance_uid for study in studies]
        per = len(uids) // ENROLMENTS
        wanted = {(e, u) for k, e in enumerate(enrolment_ids) for u in uids[k * per : (k + 1) * per]}
        meter = CpuMeter([process.pid for process in fetchers])
        meter.start()
        started = time.perf_counter()
        for k, enrolment_id in enumerate(enrolment_ids):
            event = {
                "event_id": str(uuid.uuid4()),
                "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
                "enrolment_id": enrolment_id,
                "study_instance_uids": uids[k * per : (k + 1) * per],
                "expertise_requested": False,
            }
            await producer.send_and_wait(
                settings.topic(topics.STUDIES_SELECTED), json.dumps(event).encode(), key=enrolment_id.encode()
            )
        deadline = started + 600
        while wanted and time.perf_counter() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    status = StudyStatusChanged.model_validate_json(record.value)
                    if status.status == "available":
                        wanted.discard((status.enrolment_id, status.study_instance_uid))
                    elif status.status == "failed":
                        raise SystemExit(f"a study failed: {status.reason}")
        seconds = time.perf_counter() - started
        cores, machine = meter.stop()
        if wanted:
            raise SystemExit(f"{len(wanted)} studies not available within 600 s")
        incomplete = [u for u in uids if _viewer_count(rest, u) != len(studies[0].instances)]
        if incomplete:
            raise SystemExit(f"{len(incomplete)} studies incomplete in the viewer store")
        return Round(processes, seconds, cores, machine)
    finally:
        for process in fetchers:
            process.terminate()
        for process in fetchers:
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
        await consumer.stop()
        await producer.stop()
        await mongo.drop_database(settings.database_name())
        await mongo.drop_database(f"bench_scale_budget_{run_id}")
        await mongo.close()
        await delete_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)


async def _bench(counts: list[int], instances: int, budget: int) -> None:
    env_file = _env_file()
    settings = load_settings(Settings, health_port=0)
    studies = [large_study(SEED_BASE + k, instances) for k in range(STUDIES)]
    megabytes = sum(len(ds.PixelData) for study in studies for ds in study.instances) / 1e6
    print(f"storing {STUDIES} studies of {instances} instances into MIRC (idempotent)...", flush=True)
    report = await asyncio.to_thread(store_studies, studies, settings.mirc, "PM_DEV")
    if report.failed:
        raise SystemExit(f"{report.failed} instance(s) could not be stored into MIRC")
    log_dir = Path(tempfile.mkdtemp(prefix="proxymage-scale-out-"))
    rest = httpx.Client(base_url=_viewer_rest_url(env_file), timeout=60, trust_env=False)
    rounds: list[Round] = []
    try:
        for count in counts:
            load_before = os.getloadavg()
            done = await _round(count, studies, rest, budget, log_dir)
            rounds.append(done)
            print(
                f"{count} fetcher process(es): {done.seconds:.2f} s for {STUDIES} studies "
                f"(load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    finally:
        await asyncio.to_thread(rest.close)
    base = rounds[0].seconds
    print()
    print(
        f"{STUDIES} studies x {instances} instances ({megabytes:.0f} MB), MIRC -> viewer store, selection -> all "
        f"available; MIRC budget {budget} associations; {os.cpu_count()} cores; logs in {log_dir}"
    )
    names = list(rounds[0].cores)
    cores = os.cpu_count() or 1
    header = "  ".join(f"{n:>14}" for n in [*names, "everything else"])
    print(f"{'processes':>9} {'seconds':>8} {'speed-up':>8} {'machine':>8}  {header}")
    for done in rounds:
        # Every other process of the machine (other work on it): its busy cores minus those sampled.
        others = done.machine * cores - sum(done.cores.values())
        cells = "  ".join(f"{value:>14.2f}" for value in [*(done.cores.get(n, 0.0) for n in names), others])
        print(f"{done.processes:>9} {done.seconds:>8.2f} {base / done.seconds:>8.2f} {done.machine:>8.0%}  {cells}")
    print("(CPU columns in cores: CPU seconds per wall second; machine: busy share of all its cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--budget", type=int, default=4, help="MIRC's association budget (max_associations)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_bench(args.processes, args.instances, args.budget))


if __name__ == "__main__":
    main()
