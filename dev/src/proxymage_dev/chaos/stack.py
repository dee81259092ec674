"""The chaos stack: its servers (the deploy/local scripts with PROXYMAGE_LOCAL_ENV=deploy/chaos/chaos.env) and the
services, run here as child processes (two study fetchers, so that one can take over from the other)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from dotenv import dotenv_values

ROOT: Final = Path(__file__).resolve().parents[4]
ENV_FILE: Final = ROOT / "deploy" / "chaos" / "chaos.env"
SCRIPTS: Final = ROOT / "deploy" / "local"
# What a fresh run removes from the chaos var dir: the servers' data and the logs. Installed software (Kafka's
# jars, FerretDB's binary, OHIF) and the test certificates stay, so a run does not fetch anything again.
STATE: Final = ("kafka/data", "kafka/cluster-id", "ferretdb/data", "orthanc/mirc", "orthanc/viewer", "smtp/mailbox",
                "smtp/script.json", "log", "run")  # fmt: skip


def chaos_env() -> dict[str, str]:
    """The environment of everything the run starts: no PROXYMAGE_* setting inherited from the caller (make exports
    local.env's), every value of chaos.env set explicitly (it wins over any dotenv), the scripts pointed at it."""
    values = {key: value or "" for key, value in dotenv_values(ENV_FILE).items()}
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROXYMAGE_")}
    env.update(values)
    env["PROXYMAGE_LOCAL_ENV"] = str(ENV_FILE)
    env["PROXYMAGE_ENV_FILE"] = str(ENV_FILE)
    return env


def var_dir(env: dict[str, str]) -> Path:
    path = (ROOT / env["PROXYMAGE_VAR_DIR"]).resolve()
    # The run deletes data under it: never anything but the chaos stack's own directory.
    if path.name != "chaos" or not path.is_relative_to(ROOT / "var"):
        raise SystemExit(f"refusing to use {path} as the chaos stack's var dir (PROXYMAGE_VAR_DIR)")
    return path


class ScriptError(RuntimeError):
    pass


@dataclass
class Servers:
    """Kafka, FerretDB, Orthanc MIRC and VIEWER, SMTP of the chaos stack, through the deploy/local scripts."""

    env: dict[str, str]

    def script(self, name: str, *args: str, timeout: float = 300) -> None:
        result = subprocess.run(  # noqa: S603 - the project's own scripts
            ["bash", str(SCRIPTS / name), *args],  # noqa: S607
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ScriptError(f"{name} {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")

    def wipe(self) -> None:
        """Stops whatever a previous run left and deletes the servers' data: each run starts from nothing."""
        self.script("stack.sh", "down", timeout=120)
        root = var_dir(self.env)
        for relative in STATE:
            path = root / relative
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def up(self) -> None:
        self.script("stack.sh", "up", timeout=600)

    def down(self) -> None:
        self.script("stack.sh", "down", timeout=180)

    def log_dir(self) -> Path:
        return var_dir(self.env) / "log"

    def mailbox(self) -> Path:
        return ROOT / self.env["PROXYMAGE_LOCAL_SMTP_DIR"] / "mailbox"


@dataclass
class Service:
    name: str
    package: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    killed: list[int] = field(default_factory=list)  # pids we killed on purpose
    crashes: list[str] = field(default_factory=list)  # exits nobody asked for

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Services:
    """The services as child processes, logging to the chaos var dir's log/<name>.log."""

    env: dict[str, str]
    log_dir: Path
    all: dict[str, Service] = field(default_factory=dict)

    @classmethod
    def of(cls, env: dict[str, str], log_dir: Path) -> Services:
        services = cls(env, log_dir)
        for name, package, key in (
            ("identity-matcher", "identity_matcher", "PROXYMAGE_LOCAL_IDENTITY_MATCHER_HEALTH_PORT"),
            ("study-fetcher", "study_fetcher", "PROXYMAGE_LOCAL_STUDY_FETCHER_HEALTH_PORT"),
            ("expert-notifier", "expert_notifier", "PROXYMAGE_LOCAL_EXPERT_NOTIFIER_HEALTH_PORT"),
            ("gateway", "gateway", "PROXYMAGE_LOCAL_GATEWAY_HTTP_PORT"),
        ):
            services.all[name] = Service(name, package, int(env[key]))
        # The second fetcher instance, in the same consumer groups and database: the one that takes over.
        second = int(env["PROXYMAGE_LOCAL_STUDY_FETCHER_HEALTH_PORT"]) + 2
        services.all["study-fetcher-2"] = Service("study-fetcher-2", "study_fetcher", second)
        return services

    def fetchers(self) -> list[Service]:
        return [service for service in self.all.values() if service.package == "study_fetcher"]

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str) -> None:
        service = self.all[name]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file(name).open("ab") as log:  # the child keeps its own descriptor
            service.process = subprocess.Popen(  # noqa: S603 - our own services
                [sys.executable, "-m", service.package],
                env={**self.env, "PROXYMAGE_HEALTH_PORT": str(service.port)},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_all(self) -> None:
        for name in self.all:
            self.start(name)

    def wait_ready(self, names: list[str] | None = None, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        for name in names or list(self.all):
            while not http_ok(self.all[name].port, "/readyz"):
                self.check_crashes()
                if not self.all[name].alive():
                    raise RuntimeError(f"{name} exited during start-up (log: {self.log_file(name)})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready after {timeout:.0f}s (log: {self.log_file(name)})")
                time.sleep(0.2)

    def kill9(self, name: str) -> None:
        service = self.all[name]
        if service.process is None:
            return
        service.killed.append(service.process.pid)
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait(10)

    def check_crashes(self) -> None:
        """Records every exit nobody asked for (a service is never expected to stop by itself)."""
        for service in self.all.values():
            process = service.process
            if process is not None and process.poll() is not None and process.pid not in service.killed:
                service.crashes.append(f"{service.name} exited with {process.returncode}")
                service.killed.append(process.pid)  # counted once

    def crashes(self) -> list[str]:
        self.check_crashes()
        return [crash for service in self.all.values() for crash in service.crashes]

    def stop_all(self, grace: float = 15) -> list[str]:
        """SIGTERM, then SIGKILL after `grace`; returns the services that did not exit cleanly (code 0)."""
        self.check_crashes()
        unclean = []
        running = [service for service in self.all.values() if service.alive()]
        for service in running:
            assert service.process is not None
            service.killed.append(service.process.pid)  # stopped on purpose: its exit is judged here, not a crash
            service.process.terminate()
        deadline = time.monotonic() + grace
        for service in running:
            assert service.process is not None
            try:
                code = service.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGKILL)
                code = service.process.wait(10)
                unclean.append(f"{service.name} killed after {grace:.0f}s")
                continue
            if code != 0:
                unclean.append(f"{service.name} exited with {code}")
        return unclean

    def log_lines(self) -> dict[str, int]:
        """Lines in each service's log so far."""
        counts = {}
        for name in self.all:
            path = self.log_file(name)
            counts[name] = sum(1 for _ in path.open("rb")) if path.exists() else 0
        return counts


# Loopback calls: an http_proxy in the environment must not capture them.
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(port: int, path: str) -> bool:
    with contextlib.suppress(OSError), _OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
        return bool(response.status == 200)
    return False


def connected_to(port: int, pids: set[int]) -> set[int]:
    """Which of `pids` have an established TCP connection to 127.0.0.1:`port` now (ss -p)."""
    result = subprocess.run(  # noqa: S603
        ["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return {pid for pid in pids if f"pid={pid}," in result.stdout}
