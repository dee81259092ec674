"""The container mode of the tests (PROXYMAGE_TEST_STACK=containers): the peers of the local stack (Kafka,
FerretDB, Orthanc MIRC and VIEWER, the STARTTLS + client-certificate SMTP server) started from the images of
`make images` (localhost/proxymage-*) through testcontainers-python, on the ports of
deploy/containers/test-stack.env, published on 127.0.0.1 only. Used by the pytest plugin only; testcontainers
is a dev dependency, imported here and nowhere else.

The engine is whatever DOCKER_HOST names (Docker, or podman's API socket); when it is unset the plugin starts
podman's (deploy/containers/podman-socket.sh). Every container runs on the engine's default bridge network;
MIRC reaches VIEWER (C-MOVE sub-operations) at VIEWER's address on that network. The services and the tests run
on the host and reach every peer through the published ports, as they reach the local process stack.
SMTP: the certificates are generated on the host (deploy/local/smtp/certs.sh) into
$PROXYMAGE_LOCAL_SMTP_DIR/certs and that directory is bind-mounted as the server's --dir, so the tests read its
mailbox and write its failure script exactly as with the local stack; the server runs as the caller's uid:gid
so that the files it writes belong to the caller (rootful podman or Docker).

KEEP_STACK=1 (as for `make test`) leaves the containers running at the end and reuses running ones at the next
start; otherwise leftovers of an interrupted session (same names) are removed before starting.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import struct
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient

IMAGE_TAG = os.environ.get("PROXYMAGE_IMAGE_TAG", "latest")
NAME_PREFIX = "proxymage-test-"
LABEL = "proxymage.test-stack"
READY_SECONDS = 90
# Inside the containers (the images' defaults, deploy/compose/compose.yaml).
KAFKA_PORT = 9094
FERRETDB_PORT = 27017
ORTHANC_DICOM_PORT = 4242
ORTHANC_HTTP_PORT = 8042
SMTP_PORT = 2525
SMTP_DIR = "/var/lib/proxymage-smtp"
# podman wants explicit ulimits on this kind of host (ARCHITECTURE.md, measured facts); harmless on Docker.
ULIMITS = [{"Name": "nofile", "Soft": 20000, "Hard": 20000}, {"Name": "nproc", "Soft": 4096, "Hard": 4096}]


class StackError(RuntimeError):
    """A container did not start or did not become ready (the message carries the end of its logs)."""


@dataclass
class Peer:
    """One running container and how to tell that it is ready."""

    name: str
    container: Any  # docker.models.containers.Container
    ready: Callable[[], None]  # raises while not ready

    def logs(self, lines: int = 40) -> str:
        try:
            return cast(bytes, self.container.logs(tail=lines)).decode(errors="replace")
        except Exception as error:  # diagnostics only
            return f"(no logs: {error})"

    def wait_ready(self, seconds: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.ready()
            except Exception as error:  # retried until the deadline, then reported
                self.container.reload()
                status = self.container.status
                if status in ("exited", "dead") or time.monotonic() > deadline:
                    raise StackError(
                        f"{self.name} not ready after {seconds:.0f}s (container {status}; last probe error: "
                        f"{error}); its last log lines:\n{self.logs()}"
                    ) from error
                time.sleep(0.3)
            else:
                return


class ContainerStack:
    """Starts, restarts and stops the peers; `env` is deploy/containers/test-stack.env's values."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = dict(env)
        self.peers: dict[str, Peer] = {}
        self.keep = bool(os.environ.get("KEEP_STACK"))
        self.client = DockerClient().client

    # --- lifecycle ---------------------------------------------------------------------------------------

    def up(self) -> None:
        started = time.monotonic()
        self._smtp_certs()
        self._start("kafka", self._kafka)
        self._start("ferretdb", self._ferretdb)
        self._start("smtp", self._smtp)
        self._start("viewer", lambda: self._orthanc("viewer"))
        self._start("mirc", lambda: self._orthanc("mirc"))  # after VIEWER: it needs VIEWER's address
        for peer in self.peers.values():
            peer.wait_ready()
        print(f"[container-stack] peers ready in {time.monotonic() - started:.1f}s")

    def down(self) -> None:
        if self.keep:
            return
        for peer in reversed(list(self.peers.values())):
            peer.container.remove(force=True, v=True)
        self.peers.clear()

    def orthanc(self, verb: str, instance: str) -> None:
        """`deploy/local/orthanc.sh stop|start mirc|viewer`, on the container (stopped, not removed: its data
        and address stay)."""
        peer = self.peers[instance]
        if verb == "stop":
            peer.container.stop(timeout=20)
        elif verb == "start":
            peer.container.start()
            peer.wait_ready()
        else:
            raise ValueError(f"orthanc {verb!r}: only stop and start exist in container mode")

    # --- the peers -----------------------------------------------------------------------------------------

    def _start(self, name: str, make: Callable[[], Peer]) -> None:
        existing = self._existing(name)
        if existing is not None and self.keep and existing.status == "running":
            self.peers[name] = self._adopt(name, existing)
            return
        if existing is not None:
            existing.remove(force=True, v=True)
        self.peers[name] = make()

    def _adopt(self, name: str, container: Any) -> Peer:
        probes: dict[str, Callable[[], None]] = {
            "kafka": lambda: kafka_ready(self._host_port("PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS")),
            "ferretdb": lambda: tcp_ready(self._host_port("PROXYMAGE_MONGO_URL")),
            "smtp": self._smtp_ready,
            "mirc": lambda: orthanc_ready(self._port("PROXYMAGE_LOCAL_MIRC_HTTP_PORT")),
            "viewer": lambda: orthanc_ready(self._port("PROXYMAGE_LOCAL_VIEWER_HTTP_PORT")),
        }
        return Peer(name, container, probes[name])

    def _existing(self, name: str) -> Any:
        wanted = NAME_PREFIX + name
        found = self.client.containers.list(all=True, filters={"name": wanted})
        return next((container for container in found if container.name == wanted), None)

    def _run(self, name: str, image: str, ports: Mapping[int, int], **settings: Any) -> Any:
        container = DockerContainer(f"localhost/proxymage-{image}:{IMAGE_TAG}").with_name(NAME_PREFIX + name)
        for inside, outside in ports.items():
            # Published on the loopback only (with_bind_ports knows no host address; docker-py takes a tuple).
            cast(dict[str, Any], container.ports)[f"{inside}/tcp"] = ("127.0.0.1", outside)
        for key, value in settings.pop("environment", {}).items():
            container.with_env(key, value)
        if "command" in settings:
            container.with_command(settings.pop("command"))
        for host, inside in settings.pop("mounts", {}).items():
            container.with_volume_mapping(host, inside, mode="rw")
        container.with_kwargs(labels={LABEL: str(self.root)}, ulimits=ULIMITS, **settings)
        try:
            container.start()
        except Exception as error:
            raise StackError(f"{name}: could not start {container.image}: {error}") from error
        return container.get_wrapped_container()

    def _kafka(self) -> Peer:
        port = self._host_port("PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS")
        container = self._run(
            "kafka",
            "kafka",
            {KAFKA_PORT: port},
            environment={
                "KAFKA_LISTENERS": f"PLAINTEXT://:9092,EXTERNAL://:{KAFKA_PORT},CONTROLLER://127.0.0.1:9093",
                "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:9092,EXTERNAL://127.0.0.1:{port}",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            },
        )
        return Peer("kafka", container, lambda: kafka_ready(port))

    def _ferretdb(self) -> Peer:
        port = self._host_port("PROXYMAGE_MONGO_URL")
        container = self._run("ferretdb", "ferretdb", {FERRETDB_PORT: port})
        ping = ["/usr/local/bin/ferretdb", "-ping", "-listen-addr", f"127.0.0.1:{FERRETDB_PORT}", "-timeout", "2s"]

        def ready() -> None:
            tcp_ready(port)
            code, output = container.exec_run(ping)
            if code != 0:
                raise StackError(f"ferretdb -ping: {output.decode(errors='replace').strip()}")

        return Peer("ferretdb", container, ready)

    def _orthanc(self, instance: str) -> Peer:
        prefix = instance.upper()
        environment = {
            "ORTHANC_INSTANCE": instance,
            "PROXYMAGE_MIRC__AE_TITLE": self.env["PROXYMAGE_MIRC__AE_TITLE"],
            "PROXYMAGE_VIEWER__AE_TITLE": self.env["PROXYMAGE_VIEWER__AE_TITLE"],
            "PROXYMAGE_LOCAL_CLIENT_AE_TITLES": self.env["PROXYMAGE_LOCAL_CLIENT_AE_TITLES"],
        }
        if instance == "mirc":
            # C-MOVE destination: VIEWER's address on the engine's network (no DNS needed on the default one).
            viewer = self.peers["viewer"].container
            viewer.reload()
            environment["PROXYMAGE_VIEWER__HOST"] = container_address(viewer)
        http = self._port(f"PROXYMAGE_LOCAL_{prefix}_HTTP_PORT")
        container = self._run(
            instance,
            "orthanc",
            {ORTHANC_DICOM_PORT: self._port(f"PROXYMAGE_{prefix}__PORT"), ORTHANC_HTTP_PORT: http},
            environment=environment,
        )
        return Peer(instance, container, lambda: orthanc_ready(http))

    def _smtp_dir(self) -> Path:
        return self.root / self.env["PROXYMAGE_LOCAL_SMTP_DIR"]

    def _smtp_certs(self) -> None:
        result = subprocess.run(  # noqa: S603 - the project's own script
            ["bash", str(self.root / "deploy" / "local" / "smtp" / "certs.sh"), str(self._smtp_dir() / "certs")],  # noqa: S607
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"deploy/local/smtp/certs.sh failed:\n{result.stdout}\n{result.stderr}")

    def _smtp(self) -> Peer:
        directory = self._smtp_dir()
        (directory / "mailbox").mkdir(parents=True, exist_ok=True)
        container = self._run(
            "smtp",
            "smtp",
            {SMTP_PORT: self._port("PROXYMAGE_SMTP__PORT")},
            # server.py itself (the image's entry point copies certificates from secrets; here the certificates
            # are already in the mounted directory, as deploy/local/smtp.sh lays them out).
            entrypoint=["/opt/smtp/bin/python", "-u", "/usr/local/lib/proxymage-smtp/server.py"],
            command=["--host", "0.0.0.0", "--port", str(SMTP_PORT), "--dir", SMTP_DIR],  # noqa: S104 - in the container
            mounts={str(directory): SMTP_DIR},
            user=f"{os.getuid()}:{os.getgid()}",
        )
        return Peer("smtp", container, self._smtp_ready)

    def _smtp_ready(self) -> None:
        smtp_ready(self._port("PROXYMAGE_SMTP__PORT"), self._smtp_dir() / "certs")

    # --- settings -------------------------------------------------------------------------------------------

    def _port(self, key: str) -> int:
        return int(self.env[key])

    def _host_port(self, key: str) -> int:
        """The port of a `host:port` or `scheme://host:port/` setting."""
        value = self.env[key].split("//")[-1].split("/")[0]
        return int(value.rsplit(":", 1)[1])


def container_address(container: Any) -> str:
    networks: dict[str, Any] = container.attrs["NetworkSettings"].get("Networks") or {}
    for network in networks.values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    address = container.attrs["NetworkSettings"].get("IPAddress")
    if not address:
        raise StackError(f"{container.name} has no address on a container network")
    return str(address)


# --- readiness probes (raise while not ready) ---------------------------------------------------------------


def tcp_ready(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def kafka_ready(port: int) -> None:
    """A Metadata request (v4) whose answer lists a broker (deploy/local/kafka.sh's probe): an open port is not
    enough, the broker accepts connections before it is unfenced."""
    client_id = b"proxymage-tests"
    body = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.settimeout(2)
        sock.sendall(struct.pack(">i", len(body)) + body)
        data = b""
        while len(data) < 16:
            chunk = sock.recv(4096)
            if not chunk:
                raise StackError("connection closed")
            data += chunk
    _size, correlation_id, _throttle, brokers = struct.unpack(">iiii", data[:16])
    if correlation_id != 1 or brokers < 1:
        raise StackError("no broker registered yet")


def orthanc_ready(http_port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/system", timeout=3) as response:
        response.read()


def smtp_ready(port: int, certs: Path) -> None:
    """deploy/local/smtp.sh's probe: STARTTLS with our client certificate gives a session that answers NOOP."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    with smtplib.SMTP("127.0.0.1", port, local_hostname="probe.test", timeout=3) as client:
        client.ehlo()
        if not client.has_extn("starttls"):
            raise StackError("STARTTLS not advertised")
        client.starttls(context=context)
        client.ehlo()
        if client.noop()[0] != 250:
            raise StackError("NOOP after STARTTLS failed")
