"""One chaos run: the stack started from nothing, the scenarios one after the other (each with a deadline),
everything stopped whatever happened, the logs scanned for PHI, the table printed."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from proxymage_dev.chaos import phi, scenarios
from proxymage_dev.chaos.dcc import Dcc
from proxymage_dev.chaos.stack import ROOT, Servers, Services, chaos_env
from proxymage_dev.chaos.table import Row, failed, render
from proxymage_dev.synthetic import large_study, synthetic_studies

SEED: Final = 42
LARGE_STUDY_INSTANCES: Final = 300


@dataclass(frozen=True)
class Plan:
    """What a run does: `fast` is CI's subset (under ~6 minutes), the full run follows issue 14, `long` adds the
    10-minute MIRC outage."""

    kill_rounds: int
    kafka_load_seconds: float
    kafka_outage_seconds: float
    mirc_outages: tuple[float, ...]
    # How long every enrolment may take to reach REST once the last one is acknowledged (measured: 25-30 s).
    kafka_catch_up_seconds: float
    malformed: int = 1000
    replays: int = 3

    @classmethod
    def of(cls, fast: bool, long: bool) -> Plan:
        if fast:
            return cls(
                kill_rounds=2,
                kafka_load_seconds=20,
                kafka_outage_seconds=10,
                mirc_outages=(20,),
                kafka_catch_up_seconds=120,
            )
        return cls(
            kill_rounds=5,
            kafka_load_seconds=20,
            # A minute-long Kafka outage measures the services' log lines per minute directly.
            kafka_outage_seconds=60,
            mirc_outages=(120, 600) if long else (120,),
            kafka_catch_up_seconds=240,
        )


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tool(name: str) -> str:
    """A console script of the workspace (the virtualenv this runs in)."""
    return str(Path(sys.executable).parent / name)


def seed(env: dict[str, str]) -> None:
    result = subprocess.run(  # noqa: S603
        [tool("proxymage-dev"), "seed-pacs", "--seed", str(SEED),
         "--large-study-instances", str(LARGE_STUDY_INSTANCES)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    log(result.stdout.strip())
    if result.returncode != 0:
        raise RuntimeError(f"seed-pacs failed: {result.stdout[-1000:]}{result.stderr[-2000:]}")


def topics(env: dict[str, str]) -> None:
    result = subprocess.run(  # noqa: S603 - the workspace's own command
        [tool("proxymage"), "topics"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    log(result.stdout.strip())
    if result.returncode != 0:
        raise RuntimeError(f"topics failed: {result.stderr[-2000:]}")


async def bounded(name: str, goal: str, seconds: float, scenario: Callable[[], Awaitable[list[Row]]]) -> list[Row]:
    """The scenario's rows, or one FAIL row if it raised or overran its deadline."""
    log(f"{name}: started (deadline {seconds:.0f}s)")
    started = time.monotonic()
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            rows = await scenario()
    except TimeoutError as error:
        why = f"did not finish within its {seconds:.0f}s deadline" if deadline.expired() else f"{error}"
        rows = [failed(name, goal, why[:300])]
    except Exception as error:  # any failure is this scenario's FAIL, the others still run
        rows = [failed(name, goal, f"{type(error).__name__}: {error}"[:300])]
    for row in rows:
        log(f"{row.scenario}: {'PASS' if row.passed else 'FAIL'} ({row.measured})")
    log(f"{name}: done in {time.monotonic() - started:.0f}s")
    return rows


async def scenarios_of(chaos: scenarios.Chaos, plan: Plan) -> list[Row]:
    rows: list[Row] = []
    rows += await bounded(
        "replay x3", "1 move/study, 1 e-mail/expert", 240, lambda: scenarios.replay(chaos, plan.replays)
    )
    rows += await bounded(
        f"kill -9 fetcher mid-move x{plan.kill_rounds}", "every study available, takeover <= 20s",
        90 * plan.kill_rounds, lambda: scenarios.kill_fetcher(chaos, plan.kill_rounds),
    )  # fmt: skip
    for seconds in plan.mirc_outages:
        rows += await bounded(
            f"MIRC down {scenarios.outage_label(seconds)}", "all available <= 30s after MIRC is back", seconds + 240,
            lambda seconds=seconds: scenarios.mirc_outage(chaos, seconds),  # type: ignore[misc]
        )  # fmt: skip
    rows += await bounded(
        f"{plan.malformed} malformed events", "all dead-lettered with a reason, services healthy", 300,
        lambda: scenarios.malformed(chaos, plan.malformed),
    )  # fmt: skip
    # Last: a Kafka outage can leave a service unable to publish (measured: the idempotent producer's
    # OutOfOrderSequence loop), which would fail every scenario after it for a reason not its own.
    rows += await bounded(
        "Kafka stop/restart under load", "0 lost, 0 duplicated",
        plan.kafka_load_seconds + plan.kafka_outage_seconds + plan.kafka_catch_up_seconds + 90,
        lambda: scenarios.kafka_outage(
            chaos, plan.kafka_load_seconds, plan.kafka_outage_seconds, plan.kafka_catch_up_seconds
        ),
    )  # fmt: skip
    return rows


def phi_row(servers: Servers) -> Row:
    """Every log of the stack and the services, against the synthetic patients' names and birth dates and the
    e-mails' bodies."""
    patterns = {**phi.patient_patterns(), **phi.body_patterns(phi.email_body_lines(servers.mailbox()))}
    files, findings = phi.scan_files(sorted(servers.log_dir().glob("*.log")), patterns)
    shown = "; ".join(f"{f.path.rsplit('/', 1)[-1]}:{f.line_number} {f.what}" for f in findings[:5])
    return Row(
        "PHI grep of every log",
        "no patient name, birth date or e-mail body in any log",
        f"{files} log files, {len(patterns)} patterns: {len(findings)} hits" + (f" ({shown})" if shown else ""),
        files > 0 and not findings,
    )


async def run(fast: bool, long: bool) -> int:
    # The DCC's clients here retry through the outages on purpose: their per-attempt log lines would bury the table.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    plan = Plan.of(fast, long)
    started = time.monotonic()
    env = chaos_env()
    servers = Servers(env)
    services = Services.of(env, servers.log_dir())
    dcc = Dcc(env, servers.mailbox())
    rows: list[Row] = []
    try:
        log("wiping and starting the chaos stack (deploy/chaos/chaos.env)")
        await asyncio.to_thread(servers.wipe)
        await asyncio.to_thread(servers.up)
        log("creating topics, seeding MIRC")
        await asyncio.to_thread(topics, env)
        await asyncio.to_thread(seed, env)
        log("starting the services")
        services.start_all()
        await asyncio.to_thread(services.wait_ready)
        await dcc.start()
        chaos = scenarios.Chaos(
            servers, services, dcc, uuid.uuid4().hex[:6],
            list(synthetic_studies(SEED)), large_study(SEED, LARGE_STUDY_INSTANCES),
        )  # fmt: skip
        log(f"stack and services ready in {time.monotonic() - started:.0f}s")
        rows += await scenarios_of(chaos, plan)
    except Exception as error:  # reported as a FAIL row; the stack is stopped below
        rows.append(failed("setup", "the chaos stack and the services start", f"{type(error).__name__}: {error}"[:300]))
    finally:
        await dcc.stop()
        unclean = services.stop_all()
        crashes = services.crashes()
        rows.append(
            Row(
                "services over the run",
                "no crash; clean exit on SIGTERM",
                f"{len(crashes)} crashes, {len(unclean)} unclean exits"
                + (f": {crashes + unclean}" if crashes or unclean else ""),
                not crashes and not unclean,
            )
        )
        rows.append(phi_row(servers))
        try:
            await asyncio.to_thread(servers.down)
        except Exception as error:  # reported as a FAIL row
            rows.append(failed("teardown", "the chaos stack stops", str(error)[:300]))
    title = f"make chaos{'-fast' if fast else ''}{' --long' if long else ''}: {time.monotonic() - started:.0f}s"
    print(render(rows, title), flush=True)
    return 0 if all(row.passed for row in rows) else 1
