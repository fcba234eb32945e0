"""The deploy files, checked by their own tools: the Kubernetes manifests against
Kubernetes' schemas (kubernetes-validate, offline) and for the hardening they claim, the
systemd unit's exposure by `systemd-analyze security`, the alert rules by `promtool`.
A test whose tool is missing says so and skips (scripts/test.sh installs promtool where
it can)."""

import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
UNIT = DEPLOY / "systemd" / "pubsub-envelope-pipeline.service"


def documents():
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_manifests_are_valid_kubernetes_objects():
    # Strict: a misspelt field (`securityContex`) is an error, not ignored.
    validate = pathlib.Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run([str(validate), "--strict", *map(str, MANIFESTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = sorted(doc["kind"] for doc in documents())
    assert kinds == ["Deployment", "Namespace", "PodDisruptionBudget", "ServiceAccount"]


def test_the_pipeline_pod_runs_hardened_with_bounds_probes_and_a_grace_longer_than_its_drain():
    # What a "restricted" namespace demands, and what the pipeline relies on.
    by_kind = {doc["kind"]: doc for doc in documents()}
    assert by_kind["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    account = by_kind["ServiceAccount"]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith("pipeline@")
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    grace = next(int(arg.split("=")[1]) for arg in container["args"] if arg.startswith("--shutdown_grace_secs="))
    assert pod["terminationGracePeriodSeconds"] > grace
    budget = by_kind["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"] == by_kind["Deployment"]["spec"]["selector"]["matchLabels"]
    assert budget["maxUnavailable"] < by_kind["Deployment"]["spec"]["replicas"]


def test_the_systemd_unit_exposure_is_ok():
    # `systemd-analyze security` scored the first unit 8.3 "EXPOSED"; at most 2.0 is "OK".
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd): the unit's exposure is not checked")
    result = subprocess.run([tool, "security", "--offline=yes", str(UNIT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout).group(1))
    assert score <= 2.0, result.stdout


def promtool():
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus): the alert rules are not checked")
    return tool


def test_the_alert_rules_are_valid():
    result = subprocess.run([promtool(), "check", "rules", str(DEPLOY / "prometheus" / "alerts.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_what_should_fire_it_and_not_on_a_healthy_replica():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = (DEPLOY / "prometheus" / "alerts_test.yaml").read_text()
    untested = sorted(alert for alert in alerts if f"alertname: {alert}\n" not in tests and f"alertname: {alert}," not in tests)
    assert not untested, f"alerts with no promtool test: {untested}"
    result = subprocess.run([promtool(), "test", "rules", "alerts_test.yaml"], cwd=DEPLOY / "prometheus",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
