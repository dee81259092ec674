"""The Helm chart (deploy/helm/proxymage): rendered, schema-validated, and read for what the issue asks of it.

Needs the tools `deploy/helm/check.sh tools` installs under var/helm (Helm from the Go module proxy,
kubernetes-validate, KEDA's CRDs); `make helm-check` installs them and runs these tests. Without them (a plain
`make test` before any `make helm-check`) the tests are skipped with that reason.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "proxymage"
TOOLS = ROOT / "var" / "helm"
HELM = TOOLS / "bin" / "helm"
VALIDATOR_PYTHON = TOOLS / "venv" / "bin" / "python"
KEDA_CRDS = TOOLS / "keda-crds"
KUBE_VERSION = "1.34.0"
SERVICES = ("identity-matcher", "study-fetcher", "expert-notifier", "gateway")

pytestmark = pytest.mark.skipif(
    not (HELM.exists() and VALIDATOR_PYTHON.exists() and (KEDA_CRDS / "keda.sh_scaledobjects.yaml").exists()),
    reason="Helm tools missing: run `make helm-check` (deploy/helm/check.sh tools)",
)


def render(*args: str) -> str:
    result = subprocess.run(
        [str(HELM), "template", "pm", str(CHART), "--namespace", "proxymage", "--kube-version", KUBE_VERSION, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(VALIDATOR_PYTHON),
            str(ROOT / "deploy" / "helm" / "validate.py"),
            "--kube-version",
            KUBE_VERSION,
            "--keda-crds",
            str(KEDA_CRDS),
            "-",
        ],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


PRODUCTION = ("-f", str(CHART / "values-production.yaml"))


@pytest.mark.parametrize("values", [(), PRODUCTION], ids=["default", "production"])
def test_rendered_chart_is_valid_for_kubernetes_and_keda(values: tuple[str, ...]) -> None:
    result = validate(render(*values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s)" in result.stdout


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers: [{name: x, image: x, %s}]
"""
SCALED_OBJECT = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: broken}
spec:
  scaleTargetRef: {name: x}
  %s
  triggers:
    - type: kafka
      metadata: {bootstrapServers: "k:9092", consumerGroup: g, topic: t, lagThreshold: %s}
"""


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (DEPLOYMENT % "ports: [{containerPort: health}]", "containerPort: 'health' is not of type 'integer'"),
        (DEPLOYMENT % "securityContext: {readOnlyRootFs: true}", "'readOnlyRootFs' was unexpected"),
        (DEPLOYMENT % "livenessProbe: {httpGet: {path: /healthz}}", "'port' is a required property"),
        (SCALED_OBJECT % ("minReplicaCount: 1", "20"), "lagThreshold: 20 is not of type 'string'"),
        (SCALED_OBJECT % ("maxReplicas: 6", '"20"'), "'maxReplicas' was unexpected"),
        (SCALED_OBJECT % ("minReplicaCount: one", '"20"'), "minReplicaCount: 'one' is not of type 'integer'"),
        ("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec: {}\n", "'triggers'"),
        ("apiVersion: example.org/v1\nkind: Widget\nmetadata: {name: x}\n", "Couldn't find schema for kind Widget"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {PORT: 8080}\n", "8080 is not of type 'string'"),
    ],
    ids=[
        "int-port",
        "unknown-field",
        "probe-port",
        "keda-int",
        "keda-unknown",
        "keda-type",
        "keda-required",
        "unknown-kind",
        "configmap",
    ],
)
def test_validation_refuses_a_broken_manifest(manifest: str, message: str) -> None:
    result = validate(manifest)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stdout, result.stdout


def test_validation_refuses_a_chart_rendered_with_a_wrong_value() -> None:
    result = validate(render("--set-string", "services.study-fetcher.port=health"))
    assert result.returncode == 1
    assert "containerPort: 'health' is not of type 'integer'" in result.stdout


@pytest.mark.parametrize("values", [(), PRODUCTION], ids=["default", "production"])
def test_every_service_is_hardened_probed_and_scraped(values: tuple[str, ...]) -> None:
    docs = documents(render(*values))
    deployments = by_kind(docs, "Deployment")
    assert sorted(deployments) == sorted(f"pm-proxymage-{service}" for service in SERVICES)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] != 0
        (container,) = pod["spec"]["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {mount["mountPath"] for mount in container["volumeMounts"]} >= {"/tmp"}
        env = {item["name"]: item for item in container["env"]}
        port = int(env["PROXYMAGE_HEALTH_PORT"]["value"])
        assert [p["containerPort"] for p in container["ports"]] == [port], name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert env["PROXYMAGE_MONGO_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    config = next(iter(by_kind(docs, "ConfigMap").values()))
    assert config["data"]["PROXYMAGE_HEALTH_HOST"] == "0.0.0.0"  # the probes come from outside the pod
    assert sorted(by_kind(docs, "PodDisruptionBudget")) == sorted(deployments)
    assert sorted(by_kind(docs, "NetworkPolicy")) == sorted(deployments)
    assert list(by_kind(docs, "Service")) == ["pm-proxymage-gateway"]
    ingress = by_kind(docs, "Ingress")["pm-proxymage-gateway"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "pm-proxymage-gateway", "port": {"name": "http"}}


def subscriptions(service: str, prefix: str) -> set[tuple[str, str]]:
    """(topic, consumer group) of every subscriber the service's composition root registers."""
    if service == "identity-matcher":
        from identity_matcher.app import build
        from identity_matcher.settings import Settings as IdentitySettings

        built = build(IdentitySettings(topic_prefix=prefix))
    else:
        from study_fetcher.app import build as build_fetcher
        from study_fetcher.settings import Settings as FetcherSettings

        built = build_fetcher(FetcherSettings(topic_prefix=prefix, viewer_rest_url="http://viewer:8042"))
    pairs = set()
    for subscriber in built.broker.subscribers:
        for topic in subscriber.topics:
            pairs.add((topic if isinstance(topic, str) else topic.name, subscriber.group_id))
    return pairs


@pytest.mark.parametrize("service", ["identity-matcher", "study-fetcher"])
def test_keda_scales_on_the_consumer_groups_the_service_really_uses(service: str) -> None:
    prefix = "site-a."
    docs = documents(render("--set", f"config.topicPrefix={prefix}"))
    scaled = by_kind(docs, "ScaledObject")[f"pm-proxymage-{service}"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"pm-proxymage-{service}"
    triggers = {(t["metadata"]["topic"], t["metadata"]["consumerGroup"]) for t in scaled["spec"]["triggers"]}
    assert triggers == subscriptions(service, prefix)
    # KEDA owns the replica count of a scaled Deployment.
    assert "replicas" not in by_kind(docs, "Deployment")[f"pm-proxymage-{service}"]["spec"]


def test_production_values_use_sasl_ssl_three_brokers_rf3_and_a_replica_set_secret() -> None:
    docs = documents(render(*PRODUCTION))
    job = by_kind(docs, "Job")["pm-proxymage-topics"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["proxymage", "topics"]
    assert container["args"][container["args"].index("--replication-factor") + 1] == "3"
    for deployment in by_kind(docs, "Deployment").values():
        env = {item["name"]: item for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["PROXYMAGE_KAFKA_SECURITY__PROTOCOL"]["value"] == "SASL_SSL"
        assert env["PROXYMAGE_KAFKA_SECURITY__SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env["PROXYMAGE_KAFKA_SECURITY__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
        assert env["PROXYMAGE_KAFKA_SECURITY__SSL_CAFILE"]["value"] == "/etc/proxymage/kafka/ca.crt"
        assert len(env["PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS"]["value"].split(",")) == 3
        assert env["PROXYMAGE_MONGO_URL"]["valueFrom"]["secretKeyRef"]["name"] == "proxymage-mongo"
        # The topics Job creates the topics with RF 3: the services do not create them at start (with RF 1).
        assert env["PROXYMAGE_CREATE_TOPICS_AT_START"]["value"] == "false"
        assert env["PROXYMAGE_TOPIC_REPLICATION_FACTOR"]["value"] == "3"
    for scaled in by_kind(docs, "ScaledObject").values():
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["metadata"]["sasl"] == "scram_sha512"
            assert trigger["metadata"]["tls"] == "enable"
            assert trigger["authenticationRef"]["name"].endswith("-kafka")
    assert not by_kind(docs, "Secret")  # every credential comes from a Secret the operator creates


def test_sasl_without_a_credentials_secret_is_refused() -> None:
    result = subprocess.run(
        [str(HELM), "template", "pm", str(CHART), "--kube-version", KUBE_VERSION, "--set=kafka.sasl.mechanism=PLAIN"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "kafka.sasl.existingSecret is required" in result.stderr


def test_every_replica_gets_the_same_pacs_association_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget spans services: every one reads the same per-peer limits and the same budget database."""
    from study_fetcher.settings import Settings as FetcherSettings

    docs = documents(render("--set", "mirc.maxAssociations=3", "--set", "mongo.databasePrefix=pm_"))
    config = next(iter(by_kind(docs, "ConfigMap").values()))["data"]
    for deployment in by_kind(docs, "Deployment").values():
        sources = deployment["spec"]["template"]["spec"]["containers"][0].get("envFrom", [])
        assert {"configMapRef": {"name": "pm-proxymage-config"}} in sources
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    settings = FetcherSettings(viewer_rest_url="http://viewer:8042")
    assert settings.mirc.max_associations == 3
    assert settings.viewer.max_associations == 4
    assert settings.pacs_budget_database == "pm_proxymage_pacs_budget"
