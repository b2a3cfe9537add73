"""The Helm chart (deploy/helm/rollout-controller): it lints, it renders with the default values
and with every toggle on, every rendered manifest is a valid Kubernetes object (the schemas of
kubernetes-validate, shipped in the package: no network), and the rendered pods are what the
image needs: probes on the metrics port, non-root on a read-only root filesystem with only the
data volume and /tmp writable, Kafka's credentials referenced from a Secret, never inlined."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controller.notify.config_io import parse_config
from controller.policy_io import parse_monitoring_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "rollout-controller"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
NOTIFY_EXAMPLE = ROOT / "deploy" / "notify.example.yaml"
WORKER_EXAMPLE = ROOT / "deploy" / "kubernetes" / "worker.yaml"
#: the Kubernetes versions the manifests are validated against: the oldest the chart admits
#: (Chart.yaml kubeVersion) and the newest kubernetes-validate ships
KUBERNETES_VERSIONS = ("1.25", kubernetes_validate.latest_version())
#: kinds from CRDs (the Prometheus Operator's): no schema in kubernetes-validate, checked below
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
PASSWORD = "not-a-real-password"
DATA_DIR = "/var/lib/rollout"

Manifest = dict[str, Any]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60)


def all_on_args() -> list[str]:
    """Every toggle on, with the packaged policies as the chart's policy files and the example
    notifier config as the notifier's (so the tests can check they arrive intact)."""
    args = [
        "-f",
        str(ALL_ON),
        "--set-file",
        f"policies.rollout={ROOT / 'controller' / 'policies' / 'default.yaml'}",
        "--set-file",
        f"policies.monitoring={ROOT / 'controller' / 'policies' / 'monitoring.yaml'}",
    ]
    if NOTIFY_EXAMPLE.exists():
        args += ["--set-file", f"notifier.config={NOTIFY_EXAMPLE}"]
    return args


@cache
def _render(helm: str, *args: str) -> tuple[Manifest, ...]:
    done = run_helm(helm, "template", "rollout", str(CHART), "--namespace", "ml", *args)
    assert 0 == done.returncode, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(helm: str, *args: str) -> list[Manifest]:
    return list(_render(helm, *args))


RENDERINGS = {"default": (), "all-on": tuple(all_on_args())}


@pytest.fixture(params=sorted(RENDERINGS))
def rendering(request: pytest.FixtureRequest, helm: str) -> list[Manifest]:
    return render(helm, *RENDERINGS[request.param])


@pytest.fixture
def all_on(helm: str) -> list[Manifest]:
    return render(helm, *RENDERINGS["all-on"])


@pytest.fixture
def default(helm: str) -> list[Manifest]:
    return render(helm, *RENDERINGS["default"])


def one(manifests: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = [
        m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)
    ]
    assert 1 == len(found), f"{kind} *{name_suffix}: {[m['metadata']['name'] for m in found]}"
    return found[0]


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    return (m for m in manifests if m["kind"] in ("Deployment", "StatefulSet"))


def worker(manifests: list[Manifest]) -> Manifest:
    (found,) = (m for m in workloads(manifests) if m["metadata"]["name"].endswith("-worker"))
    return found


def container(workload: Manifest) -> Manifest:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


# ---- helm lint, and the values' schema ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_the_chart_lints(helm: str, name: str) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), *RENDERINGS[name])
    assert 0 == done.returncode, done.stdout + done.stderr


def test_values_outside_the_schema_are_refused(helm: str) -> None:
    done = run_helm(helm, "template", "rollout", str(CHART), "--set", "kafka.securityProtocol=SASL")
    assert 0 != done.returncode
    assert "securityProtocol" in done.stderr


# ---- every manifest is valid Kubernetes -----------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_is_valid_kubernetes(
    rendering: list[Manifest], version: str
) -> None:
    problems = []
    for manifest in rendering:
        if manifest["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            problems.append(f"{name}: {exc.message} at {list(exc.path)}")
    assert [] == problems


def test_the_prometheus_operator_objects_are_well_formed(all_on: list[Manifest]) -> None:
    monitor = one(all_on, "ServiceMonitor")
    assert "monitoring.coreos.com/v1" == monitor["apiVersion"]
    assert [("metrics", "/metrics")] == [
        (e["port"], e["path"]) for e in monitor["spec"]["endpoints"]
    ]
    # deploy/prometheus/rules.yaml selects the workers' series by this job label
    assert [{"targetLabel": "job", "replacement": "rollout-controller"}] == monitor["spec"][
        "endpoints"
    ][0]["relabelings"]
    rule = one(all_on, "PrometheusRule")
    assert yaml.safe_load(RULES.read_text()) == rule["spec"]


def test_the_default_values_render_no_operator_objects(default: list[Manifest]) -> None:
    assert set() == {m["kind"] for m in default} & CRD_KINDS


# ---- the pods -------------------------------------------------------------------------------


def test_the_worker_runs_the_worker_command(rendering: list[Manifest]) -> None:
    assert ["worker", "--loglevel", "info"] == container(worker(rendering))["args"]


def test_probes_are_on_the_metrics_port(rendering: list[Manifest]) -> None:
    main = container(worker(rendering))
    assert [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}] == main["ports"]
    assert {"path": "/healthz", "port": "metrics"} == main["livenessProbe"]["httpGet"]
    assert {"path": "/readyz", "port": "metrics"} == main["readinessProbe"]["httpGet"]
    assert {"path": "/healthz", "port": "metrics"} == main["startupProbe"]["httpGet"]
    config = one(rendering, "ConfigMap", "rollout-controller")
    assert "9464" == config["data"]["ROLLOUT_METRICS_PORT"]


def test_every_pod_runs_as_uid_10001_without_privileges(rendering: list[Manifest]) -> None:
    for workload in workloads(rendering):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert 10001 == pod["securityContext"]["runAsUser"]
        assert {"type": "RuntimeDefault"} == pod["securityContext"]["seccompProfile"]
        for each in pod["containers"]:
            context = each["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["runAsNonRoot"] is True
            assert {"drop": ["ALL"]} == context["capabilities"]
            assert {"type": "RuntimeDefault"} == context["seccompProfile"]


def writable_mounts(workload: Manifest) -> dict[str, str]:
    """mountPath -> volume name of the container's mounts that are not read-only."""
    return {
        mount["mountPath"]: mount["name"]
        for mount in container(workload).get("volumeMounts", [])
        if not mount.get("readOnly", False)
    }


def test_only_the_data_volume_and_tmp_are_writable(rendering: list[Manifest]) -> None:
    for workload in workloads(rendering):
        expected = {"/tmp": "tmp"}
        if workload["metadata"]["name"].endswith("-worker"):
            expected[DATA_DIR] = "data"
        assert expected == writable_mounts(workload), workload["metadata"]["name"]
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes["tmp"]
    config = one(rendering, "ConfigMap", "rollout-controller")
    assert DATA_DIR == config["data"]["ROLLOUT_DATA_DIR"]


def test_the_data_volume_is_an_empty_dir_by_default(default: list[Manifest]) -> None:
    workload = worker(default)
    assert "Deployment" == workload["kind"]
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]


def test_persistence_makes_a_stateful_set_with_a_claim_per_worker(
    all_on: list[Manifest],
) -> None:
    workload = worker(all_on)
    assert "StatefulSet" == workload["kind"]
    (claim,) = workload["spec"]["volumeClaimTemplates"]
    assert "data" == claim["metadata"]["name"]
    assert "20Gi" == claim["spec"]["resources"]["requests"]["storage"]
    volumes = {v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]}
    assert "data" not in volumes
    service = one(all_on, "Service")
    assert service["metadata"]["name"] == workload["spec"]["serviceName"]


# ---- Kafka's credentials ---------------------------------------------------------------------


def test_the_kafka_secret_is_referenced_not_inlined(all_on: list[Manifest]) -> None:
    secret = one(all_on, "Secret", "-kafka")
    assert {
        "ROLLOUT_SECURITY_PROTOCOL": "SASL_SSL",
        "ROLLOUT_SASL_MECHANISM": "SCRAM-SHA-512",
        "ROLLOUT_SASL_USERNAME": "rollout",
        "ROLLOUT_SASL_PASSWORD": PASSWORD,
    } == secret["stringData"]
    # the password is in that Secret and nowhere else
    elsewhere = [
        f"{m['kind']}/{m['metadata']['name']}"
        for m in all_on
        if PASSWORD in yaml.safe_dump(m) and m is not secret
    ]
    assert [] == elsewhere
    for workload in workloads(all_on):
        refs = [s["secretRef"]["name"] for s in container(workload)["envFrom"] if "secretRef" in s]
        assert secret["metadata"]["name"] in refs


def test_tls_files_are_mounted_read_only_from_a_secret(all_on: list[Manifest]) -> None:
    tls = one(all_on, "Secret", "-kafka-tls")
    assert {"ca.crt", "tls.crt", "tls.key"} == set(tls["stringData"])
    for workload in workloads(all_on):
        main = container(workload)
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert "/etc/rollout/kafka-tls/ca.crt" == env["ROLLOUT_SSL_CAFILE"]
        assert "/etc/rollout/kafka-tls/tls.crt" == env["ROLLOUT_SSL_CERTFILE"]
        assert "/etc/rollout/kafka-tls/tls.key" == env["ROLLOUT_SSL_KEYFILE"]
        mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
        assert mounts["/etc/rollout/kafka-tls"]["readOnly"] is True
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert tls["metadata"]["name"] == volumes["kafka-tls"]["secret"]["secretName"]


def test_an_existing_secret_replaces_the_charts(helm: str) -> None:
    manifests = render(
        helm,
        "--set",
        "kafka.existingSecret=team-kafka",
        "--set",
        "kafka.tls.enabled=true",
        "--set",
        "kafka.tls.existingSecret=team-kafka-tls",
    )
    assert [] == [m for m in manifests if m["kind"] == "Secret"]
    workload = worker(manifests)
    refs = [s["secretRef"]["name"] for s in container(workload)["envFrom"] if "secretRef" in s]
    assert ["team-kafka"] == refs
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    assert "team-kafka-tls" == volumes["kafka-tls"]["secret"]["secretName"]


# ---- what selects what -----------------------------------------------------------------------


def pod_labels(workload: Manifest) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_the_disruption_budget_selects_the_workers_only(all_on: list[Manifest]) -> None:
    budget = one(all_on, "PodDisruptionBudget")
    selector = budget["spec"]["selector"]["matchLabels"]
    assert 1 == budget["spec"]["maxUnavailable"]
    assert selects(selector, pod_labels(worker(all_on)))
    notifier = one(all_on, "Deployment", "-notifier")
    assert not selects(selector, pod_labels(notifier))
    assert selector == worker(all_on)["spec"]["selector"]["matchLabels"]


def test_the_metrics_service_and_monitor_reach_the_workers(all_on: list[Manifest]) -> None:
    service = one(all_on, "Service")
    assert selects(service["spec"]["selector"], pod_labels(worker(all_on)))
    assert not selects(service["spec"]["selector"], pod_labels(one(all_on, "Deployment")))
    assert [("metrics", 9464, "metrics")] == [
        (p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]
    ]
    monitor = one(all_on, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert ["ml"] == monitor["spec"]["namespaceSelector"]["matchNames"]


# ---- policies and the notifier ---------------------------------------------------------------


def test_the_policies_reach_the_worker_intact(all_on: list[Manifest]) -> None:
    policies = one(all_on, "ConfigMap", "-policies")
    root = ROOT / "controller" / "policies"
    assert parse_policy((root / "default.yaml").read_text()) == parse_policy(
        policies["data"]["rollout.yaml"]
    )
    assert parse_monitoring_policy(
        (root / "monitoring.yaml").read_text()
    ) == parse_monitoring_policy(policies["data"]["monitoring.yaml"])
    main = container(worker(all_on))
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert "/etc/rollout/policies/rollout.yaml" == env["ROLLOUT_POLICY_FILE"]
    assert "/etc/rollout/policies/monitoring.yaml" == env["ROLLOUT_MONITORING_POLICY_FILE"]


def test_without_policies_the_worker_uses_the_packaged_ones(default: list[Manifest]) -> None:
    env = {e["name"] for e in container(worker(default))["env"]}
    assert set() == env & {"ROLLOUT_POLICY_FILE", "ROLLOUT_MONITORING_POLICY_FILE"}
    assert [] == [m for m in default if m["metadata"]["name"].endswith("-policies")]


def test_the_notifier_reads_its_config_and_its_secrets(all_on: list[Manifest]) -> None:
    notifier = one(all_on, "Deployment", "-notifier")
    main = container(notifier)
    assert [
        "notify",
        "--config",
        "/etc/rollout/notify.yaml",
        "--log-level",
        "INFO",
        "--metrics-port",
        "9465",
    ] == main["args"]
    secret = one(all_on, "Secret", "-notifier")
    secrets = secret["stringData"]
    config = one(all_on, "ConfigMap", "-notifier")
    assert [] == [name for name, value in secrets.items() if value in yaml.safe_dump(config)]
    # the rendered file is the example, and the Secret holds every variable it names
    rendered = parse_config(config["data"]["notify.yaml"], "notify.yaml", secrets)
    expected = parse_config(NOTIFY_EXAMPLE.read_text(), "example", secrets)
    assert expected == rendered
    refs = [s["secretRef"]["name"] for s in main["envFrom"] if "secretRef" in s]
    assert secret["metadata"]["name"] in refs
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert mounts["/etc/rollout/notify.yaml"]["readOnly"] is True
    assert [{"name": "metrics", "containerPort": 9465, "protocol": "TCP"}] == main["ports"]
    assert {"path": "/healthz", "port": "metrics"} == main["livenessProbe"]["httpGet"]
    assert {"path": "/readyz", "port": "metrics"} == main["readinessProbe"]["httpGet"]
    # one notifier at a time, even while it is updated: two would send everything twice
    assert 1 == notifier["spec"]["replicas"]
    assert {"type": "Recreate"} == notifier["spec"]["strategy"]


def test_the_default_values_run_no_notifier(default: list[Manifest]) -> None:
    assert [worker(default)] == list(workloads(default))


# ---- deploy/kubernetes/worker.yaml -----------------------------------------------------------


def test_the_plain_manifest_example_is_the_charts_rendering(helm: str) -> None:
    """deploy/kubernetes/worker.yaml is `make k8s-example`'s output: regenerate it when the
    chart changes."""
    done = run_helm(helm, "template", "rollout", str(CHART), "--namespace", "rollout")
    assert 0 == done.returncode, done.stderr
    text = WORKER_EXAMPLE.read_text()
    body = text[text.index("---") :]
    assert done.stdout.strip() == body.strip(), "run `make k8s-example`"


def test_the_signing_files_are_mounted_where_the_worker_reads_them(all_on: list[Manifest]) -> None:
    from controller.security.signing import KeyRing

    env = {e["name"]: e.get("value") for e in container(worker(all_on))["env"]}
    mounts = {m["name"]: m for m in container(worker(all_on))["volumeMounts"]}
    identities = one(all_on, "ConfigMap", "-identities")["data"]["identities.yaml"]

    ring = KeyRing.identities(yaml.safe_load(identities))  # what the worker will load

    assert ["alice-1"] == sorted(ring.keys)
    assert env["ROLLOUT_IDENTITIES_FILE"] == mounts["identities"]["mountPath"] + "/identities.yaml"
    assert env["ROLLOUT_COMMAND_KEY_FILE"].startswith(mounts["command-key"]["mountPath"] + "/")
    assert mounts["command-key"]["readOnly"] and mounts["identities"]["readOnly"]
    volumes = {v["name"]: v for v in worker(all_on)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["command-key"]["secret"]["secretName"] == "rollout-command-key"


def test_without_signing_values_nothing_is_mounted(default: list[Manifest]) -> None:
    env = {e["name"] for e in container(worker(default))["env"]}

    assert not env & {"ROLLOUT_IDENTITIES_FILE", "ROLLOUT_COMMAND_KEY_FILE"}
