"""The Helm chart, rendered offline through helm-python-sdk (Helm's own Go library, no binary).

Each values file in helm/tidings/ci/ is rendered, and every manifest is checked against the
Kubernetes schemas with kubernetes-validate (offline, strict: an unknown field is an error).
The values schema is checked to refuse what the chart cannot run, and ``helm lint`` to pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies
from gateway.policy.secret_values import SecretResolver
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tidings"
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBERNETES_VERSION = "1.30.0"
CHART_SET = {"TIDINGS_HOST", "TIDINGS_PORT", "TIDINGS_POLICY_DIR", "TIDINGS_DATA_DIR"}
CUSTOM_KINDS = {"ServiceMonitor"}  # the Prometheus Operator's CRD: not in the Kubernetes schemas


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def values_of(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return loaded


def render(chart: helm.Chart, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every object the chart makes for ``values``, as an install would (the schema applies)."""
    manifests = chart.render(values, name="tidings", namespace="notify", is_install=True)
    return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def pod_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [statefulset] = by_kind(objects, "StatefulSet")
    spec: dict[str, Any] = statefulset["spec"]["template"]["spec"]
    return spec


def container(pod: dict[str, Any], name: str = "tidings") -> dict[str, Any]:
    [found] = [item for item in pod["containers"] if item["name"] == name]
    return found


def env_of(item: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in item.get("env", [])}


def refusal(chart: helm.Chart, values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.validate_schema(values)
    return str(refused.value)


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda path: path.name)
def test_every_rendered_manifest_is_valid_kubernetes(chart: helm.Chart, values_file: Path) -> None:
    objects = render(chart, yaml.safe_load(values_file.read_text()))
    assert by_kind(objects, "StatefulSet") and by_kind(objects, "Service")
    for item in objects:
        if item["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda path: path.name)
def test_lint_finds_no_error_or_warning(values_file: Path) -> None:
    report = helm.lint(CHART, yaml.safe_load(values_file.read_text()), strict=True, namespace="notify")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_defaults_ask_for_policy_files(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"policies.files is empty"):
        render(chart, None)


def test_the_store_is_a_claim_per_pod_and_one_replica(chart: helm.Chart) -> None:
    objects = render(chart, values_of("minimal"))
    [statefulset] = by_kind(objects, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    mounts = {mount["name"]: mount for mount in container(pod_of(objects))["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]]["mountPath"] == env_of(container(pod_of(objects)))["TIDINGS_DATA_DIR"]


def test_the_pod_runs_locked_down(chart: helm.Chart) -> None:
    pod = pod_of(render(chart, values_of("minimal")))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 10001, "the image's user"
    assert pod["automountServiceAccountToken"] is False
    for item in pod["containers"] + pod.get("initContainers", []):
        context = item["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert {mount["mountPath"] for mount in container(pod)["volumeMounts"]} >= {"/tmp", "/var/lib/tidings"}, "the only writable places"


def test_the_probes_call_the_health_endpoints_the_image_checks(chart: helm.Chart) -> None:
    tidings = container(pod_of(render(chart, values_of("minimal"))))
    assert tidings["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert tidings["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert "/healthz" in (ROOT / "Dockerfile").read_text()


def test_policy_files_are_a_configmap_mounted_whole_so_updates_arrive(chart: helm.Chart) -> None:
    values = values_of("minimal")
    objects = render(chart, values)
    [configmap] = by_kind(objects, "ConfigMap")
    assert configmap["data"].keys() == values["policies"]["files"].keys()
    assert yaml.safe_load(configmap["data"]["tenants.yaml"]) == yaml.safe_load(values["policies"]["files"]["tenants.yaml"])
    pod = pod_of(objects)
    [mount] = [m for m in container(pod)["volumeMounts"] if m["name"] == "policies"]
    assert mount["mountPath"] == env_of(container(pod))["TIDINGS_POLICY_DIR"] == "/etc/tidings/policies"
    assert "subPath" not in mount, "a subPath mount never sees a ConfigMap update"
    [volume] = [v for v in pod["volumes"] if v["name"] == "policies"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]


def test_git_sync_syncs_once_before_the_gateway_starts_then_follows_the_branch(chart: helm.Chart) -> None:
    objects = render(chart, values_of("git-sync"))
    assert by_kind(objects, "ConfigMap") == []
    pod = pod_of(objects)
    [init] = pod["initContainers"]
    sidecar = container(pod, "git-sync")
    assert env_of(init)["GITSYNC_ONE_TIME"] == "true" and env_of(sidecar)["GITSYNC_ONE_TIME"] == "false"
    assert env_of(sidecar)["GITSYNC_REPO"] == "https://git.example.com/ops/tidings-policies.git"
    assert sidecar["envFrom"] == [{"secretRef": {"name": "tidings-git-credentials"}}]
    root = env_of(sidecar)["GITSYNC_ROOT"]
    assert env_of(container(pod))["TIDINGS_POLICY_DIR"] == f"{root}/{env_of(sidecar)['GITSYNC_LINK']}/policies"


def test_the_chart_secret_is_every_variable_and_every_file(chart: helm.Chart) -> None:
    values = values_of("ingress-servicemonitor")
    objects = render(chart, values)
    [secret] = by_kind(objects, "Secret")
    assert secret["data"].keys() == values["secrets"]["values"].keys()
    pod = pod_of(objects)
    assert container(pod)["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    [volume] = [v for v in pod["volumes"] if v["name"] == "secrets"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    statefulset = by_kind(objects, "StatefulSet")[0]
    assert "checksum/secret" in statefulset["spec"]["template"]["metadata"]["annotations"], "a changed secret rolls the pod"
    assert not any(value in json.dumps(statefulset) for value in values["secrets"]["values"].values())


def test_an_existing_secret_is_used_and_none_is_made(chart: helm.Chart) -> None:
    objects = render(chart, values_of("existing-secret"))
    assert by_kind(objects, "Secret") == []
    pod = pod_of(objects)
    assert container(pod)["envFrom"] == [{"secretRef": {"name": "tidings-secrets"}}]
    assert {v["name"]: v for v in pod["volumes"]}["secrets"]["secret"]["secretName"] == "tidings-secrets"
    [claim] = by_kind(objects, "StatefulSet")[0]["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"


def test_ingress_and_servicemonitor_point_at_the_service(chart: helm.Chart) -> None:
    objects = render(chart, values_of("ingress-servicemonitor"))
    [ingress] = by_kind(objects, "Ingress")
    [service] = [s for s in by_kind(objects, "Service") if s["spec"].get("clusterIP") != "None"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["hosts"] == ["notify.example.com"]
    [monitor] = by_kind(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert env_of(container(pod_of(objects)))["TIDINGS_LOG_FORMAT"] == "json"


def test_optional_objects_are_off_by_default(chart: helm.Chart) -> None:
    objects = render(chart, values_of("minimal"))
    assert {item["kind"] for item in objects} == {"ConfigMap", "Service", "ServiceAccount", "StatefulSet"}


def test_more_than_one_replica_on_sqlite_is_refused_naming_the_postgresql_store(chart: helm.Chart) -> None:
    message = refusal(chart, {"replicaCount": 2})
    assert "/replicaCount" in message and "the PostgreSQL store is what allows replicas" in message
    with pytest.raises(helm.HelmValuesError, match="PostgreSQL store is what allows replicas"):
        render(chart, values_of("minimal") | {"replicaCount": 3})


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"resources": {"requests": {"cpu": "-100m"}}}, "/resources/requests/cpu"),
        ({"resources": {"limits": {"memory": -1}}}, "/resources/limits/memory"),
        ({"store": {"size": "-1Gi"}}, "/store/size"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"replicas": 1}, "additional properties 'replicas'"),
        ({"image": {"repository": "tidings", "tga": "1"}}, "additional properties 'tga'"),
        ({"store": {"type": "postgresql"}}, "/store/type"),
        ({"env": {"TIDINGS_NO_SUCH_SETTING": "1"}}, "invalid propertyName 'TIDINGS_NO_SUCH_SETTING'"),
        ({"env": {"TIDINGS_PORT": "9000"}}, "invalid propertyName 'TIDINGS_PORT'"),
        ({"policies": {"files": {"tenants.json": "{}"}}}, "invalid propertyName 'tenants.json'"),
        ({"policies": {"source": "gitSync"}}, "/policies"),
        ({"policies": {"gitSync": {"path": "../etc"}}}, "/policies/gitSync/path"),
        ({"secrets": {"existingSecret": "mine", "values": {"A": "b"}}}, "/secrets/values"),
        ({"secrets": {"values": {"NOT-A-VARIABLE": "b"}}}, "invalid propertyName 'NOT-A-VARIABLE'"),
        ({"service": {"port": 0}}, "/service/port"),
        ({"ingress": {"hosts": [{"host": "x", "paths": [{"path": "nope", "pathType": "Prefix"}]}]}}, "/ingress/hosts/0/paths/0/path"),
    ],
)
def test_the_values_schema_refuses_what_the_chart_cannot_run(chart: helm.Chart, values: dict[str, Any], where: str) -> None:
    assert where in refusal(chart, values)


def test_the_values_schema_takes_the_shipped_and_example_values(chart: helm.Chart) -> None:
    chart.validate_schema(None)
    for path in VALUES_FILES:
        chart.validate_schema(yaml.safe_load(path.read_text()))


def test_env_takes_exactly_the_settings_the_chart_does_not_set_itself() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = set(schema["properties"]["env"]["propertyNames"]["enum"])
    assert allowed == {f"TIDINGS_{name.upper()}" for name in Settings.model_fields} - CHART_SET


def test_every_value_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in leaf_keys(chart_values):
        assert f"| `{key}` |" in readme, f"{key} is not in the README's values table"


def leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted names of the values a user sets (maps of free names, like env, count as one)."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name not in FREE_MAPS:
            yield from leaf_keys(value, name + ".")
        else:
            yield name


FREE_MAPS = {"resources", "policies.gitSync.resources", "policies.files", "secrets.values", "env", "livenessProbe", "readinessProbe"}


SECRETS_MOUNT = "/etc/tidings/secrets"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    "values_file", [path for path in VALUES_FILES if "files" in (yaml.safe_load(path.read_text()).get("policies") or {})], ids=lambda path: path.name
)
def test_the_policy_files_in_the_example_values_load(values_file: Path, tmp_path: Path) -> None:
    """What the examples put in the ConfigMap is a policy set Tidings accepts, secrets mounted as the chart mounts them."""
    files: dict[str, str] = yaml.safe_load(values_file.read_text())["policies"]["files"]
    policies, mounted = tmp_path / "policies", tmp_path / "secrets"
    policies.mkdir()
    mounted.mkdir()
    for name, text in files.items():
        for secret in re.findall(rf"{SECRETS_MOUNT}/(\w+)", text):
            (mounted / secret).write_text(WEBHOOK_SECRET)
        (policies / name).write_text(text.replace(f"{SECRETS_MOUNT}/", f"{mounted}/"))
    environ = {name: "SG.not-a-real-key" for text in files.values() for name in re.findall(r"\$env: (\w+)", text)}
    loaded = load_policies(policies, PluginCatalog.discover(), secrets=SecretResolver(None, environ))
    assert sorted(loaded.files) == sorted(files)
