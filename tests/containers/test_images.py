"""The service images (deploy/images/Containerfile): the HEALTHCHECK's port table matches the services' settings
(no podman needed); with podman: labels, non-root user, HEALTHCHECK kept (docker format), secrets files → env."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
from expert_notifier.settings import Settings as NotifierSettings
from gateway.settings import Settings as GatewaySettings
from identity_matcher.settings import Settings as MatcherSettings
from study_fetcher.settings import Settings as FetcherSettings

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "deploy" / "images"
SETTINGS = {
    "identity-matcher": MatcherSettings,
    "study-fetcher": FetcherSettings,
    "expert-notifier": NotifierSettings,
    "gateway": GatewaySettings,
}


def test_the_healthcheck_knows_each_services_default_health_port() -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", IMAGES / "healthcheck.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert {name: cls.model_fields["health_port"].default for name, cls in SETTINGS.items()} == module.DEFAULT_PORTS


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.containers
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_service_image(service: str, tmp_path: Path) -> None:
    image = f"localhost/proxymage-{service}:latest"
    inspected = podman("image", "inspect", image)
    assert inspected.returncode == 0, f"{image} missing: run make images"
    document = json.loads(inspected.stdout)[0]
    config = document["Config"]
    assert config["User"] == "10001:10001"
    assert config["Labels"]["org.opencontainers.image.title"] == f"proxymage-{service}"
    assert f"PROXYMAGE_SERVICE={service}" in config["Env"]
    assert "healthcheck.py" in " ".join(document["Healthcheck"]["Test"])
    # A secret file becomes the environment variable of its name; the root filesystem read-only; not root.
    (tmp_path / "PROXYMAGE_LOG_LEVEL").write_text("DEBUG\n")
    (tmp_path / "PROXYMAGE_LOG_LEVEL").chmod(0o644)
    tmp_path.chmod(0o755)
    ran = podman(
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-v",
        f"{tmp_path}:/run/secrets:ro",
        image,
        "sh",
        "-c",
        'touch /etc/x 2>/dev/null && echo writable; printf "%s %s" "$(id -u)" "$PROXYMAGE_LOG_LEVEL"',
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "10001 DEBUG"
