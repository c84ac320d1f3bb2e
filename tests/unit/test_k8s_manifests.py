"""The Kubernetes manifests in k8s/: valid objects, wired to the daemon and to the guide's setup.

Core kinds are validated offline against the Kubernetes JSON schemas that
``kubernetes-validate`` bundles. The Prometheus Operator kinds in k8s/monitoring/ have no
schema there: they are checked structurally, and their PromQL against SPEC's metric names.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics_core import Metric

from invalidator.config import load_yaml, parse_config
from invalidator.core.placement import parse_server
from invalidator.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
MONITORING = K8S / "monitoring"
KUBERNETES_VERSION = "1.30"
NAMESPACE = "caching"
CLUSTER_DOMAIN = "svc.cluster.local"
DEFAULT_DRAIN_TIMEOUT = 5.0  # `invalidator run --drain-timeout` default

# SPEC: the environment variables the daemon reads.
SPEC_ENV = {
    "INVALIDATOR_CONFIG",
    "INVALIDATOR_DSN",
    "INVALIDATOR_DSN_FILE",
    "INVALIDATOR_MEMCACHED_SERVERS",
    "INVALIDATOR_SLOT",
    "INVALIDATOR_HTTP_LISTEN",
    "INVALIDATOR_LOG_FORMAT",
    "INVALIDATOR_LOG_LEVEL",
}
# SPEC: the metric names as Prometheus stores them (prefix invalidator_).
SPEC_METRICS = {
    "invalidator_changes_total",
    "invalidator_operations_total",
    "invalidator_commit_to_ack_seconds",
    "invalidator_replication_lag_bytes",
    "invalidator_confirmed_lsn",
    "invalidator_pending_operations",
    "invalidator_memcached_errors_total",
    "invalidator_unbuildable_keys_total",
    "invalidator_up",
    "invalidator_gaps_total",
    "invalidator_replica_lag_seconds",
    "invalidator_replica_wait_seconds",
    "invalidator_audit_checked_total",
    "invalidator_audit_stale_total",
}
SPEC_HISTOGRAMS = {"invalidator_commit_to_ack_seconds", "invalidator_replica_wait_seconds"}
METRIC_NAME = re.compile(r"\binvalidator_[a-z0-9_]+")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "CronJob"}
CLUSTER_SCOPED_KINDS = {"Namespace"}
PROMETHEUS_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


# -- loading ------------------------------------------------------------------------------


def read_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomization(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


def applied_documents() -> list[dict[str, Any]]:
    """Every object `kubectl apply -k k8s/` sends (kustomize's own labels aside)."""
    docs: list[dict[str, Any]] = []
    for resource in kustomization(K8S)["resources"]:
        docs.extend(read_yaml_documents(K8S / resource))
    return docs


def dashboard_configmap() -> dict[str, Any]:
    """The ConfigMap that monitoring/kustomization.yaml generates for Grafana."""
    (generator,) = kustomization(MONITORING)["configMapGenerator"]
    data = {name: (MONITORING / name).read_text(encoding="utf-8") for name in generator["files"]}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": generator["name"],
            "namespace": NAMESPACE,
            "labels": generator["options"]["labels"],
        },
        "data": data,
    }


DOCS = applied_documents()
SECRET_EXAMPLE = read_yaml_documents(K8S / "secret.example.yaml")
MONITORING_DOCS = [
    doc
    for name in kustomization(MONITORING)["resources"]
    for doc in read_yaml_documents(MONITORING / name)
]
CORE_DOCS = DOCS + SECRET_EXAMPLE + [dashboard_configmap()]


def doc_id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def find(kind: str, name: str, docs: list[dict[str, Any]] = DOCS) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def of_kind(kind: str, docs: list[dict[str, Any]] = DOCS) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        template: dict[str, Any] = workload["spec"]["jobTemplate"]["spec"]["template"]
    else:
        template = workload["spec"]["template"]
    return template


def workloads() -> list[dict[str, Any]]:
    return [d for d in DOCS if d["kind"] in WORKLOAD_KINDS]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_template(workload)["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in containers(workload) if c["name"] == name]
    return found


def invalidator_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container running the project's image."""
    for workload in workloads():
        for c in containers(workload):
            if c["image"].split(":")[0] == "pg-cache-invalidator":
                yield workload, c


def env_value(c: dict[str, Any], name: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [e for e in c.get("env", []) if e["name"] == name]
    (entry,) = entries
    return entry


def probes(c: dict[str, Any]) -> list[dict[str, Any]]:
    return [c[k] for k in ("livenessProbe", "readinessProbe", "startupProbe") if k in c]


def probe_port(probe: dict[str, Any]) -> int | str:
    for handler in ("httpGet", "tcpSocket", "grpc"):
        if handler in probe:
            port: int | str = probe[handler]["port"]
            return port
    raise AssertionError(f"probe without a port: {probe}")


def port_matches(reference: int | str, ports: list[dict[str, Any]]) -> bool:
    if isinstance(reference, int):
        return any(p["containerPort"] == reference for p in ports)
    return any(p.get("name") == reference for p in ports)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def selected_workloads(selector: dict[str, str]) -> list[dict[str, Any]]:
    return [w for w in workloads() if selects(selector, pod_template(w)["metadata"]["labels"])]


def configmap_config() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(find("ConfigMap", "invalidator-config")["data"]["config.yaml"])
    return data


def memcached_pod_addresses() -> list[str]:
    """The servers the guide's apps use: one per StatefulSet pod, through the headless Service."""
    statefulset = find("StatefulSet", "memcached")
    service = find("Service", statefulset["spec"]["serviceName"])
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "memcached"]
    name, namespace = statefulset["metadata"]["name"], statefulset["metadata"]["namespace"]
    return [
        f"{name}-{i}.{service['metadata']['name']}.{namespace}.{CLUSTER_DOMAIN}:{port}"
        for i in range(statefulset["spec"]["replicas"])
    ]


def drain_timeout(args: list[str]) -> float:
    for i, arg in enumerate(args):
        if arg == "--drain-timeout":
            return float(args[i + 1])
        if arg.startswith("--drain-timeout="):
            return float(arg.split("=", 1)[1])
    return DEFAULT_DRAIN_TIMEOUT


def metric_names(promql: str) -> set[str]:
    """Metric names in an expression, histogram series folded onto the histogram's name."""
    names = set()
    for name in METRIC_NAME.findall(promql):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base if base in SPEC_HISTOGRAMS else name)
    return names


def alert_rules() -> list[dict[str, Any]]:
    rule = find("PrometheusRule", "invalidator", MONITORING_DOCS)
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


@pytest.fixture
def pod_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The invalidator container's environment, the DSN file being the example Secret's
    ``dsn`` written where the test can read it."""
    for name in SPEC_ENV:
        monkeypatch.delenv(name, raising=False)
    c = container(find("Deployment", "invalidator"), "invalidator")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(secret_example("invalidator-db")["stringData"]["dsn"] + "\n")
    for entry in c["env"]:
        value = entry.get("value", "postgresql://invalidator@db.example:5432/app")
        if entry["name"] == "INVALIDATOR_DSN_FILE":
            value = str(dsn_file)
        monkeypatch.setenv(entry["name"], value)


def secret_example(name: str) -> dict[str, Any]:
    return find("Secret", name, SECRET_EXAMPLE)


def mounted_file(workload: dict[str, Any], c: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mounted (read-only asserted) at ``path``'s directory, and that it projects
    exactly the file ``path``'s name: returns ``{volume, mount, key}``."""
    file = PurePosixPath(path)
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(file.parent)]
    assert mount.get("readOnly") is True, (doc_id(workload), mount)
    assert "subPath" not in mount
    (volume,) = [v for v in pod_template(workload)["spec"]["volumes"] if v["name"] == mount["name"]]
    source = volume.get("secret") or volume.get("configMap") or {}
    (key,) = [item["key"] for item in source.get("items", []) if item["path"] == file.name]
    return {"volume": volume, "mount": mount, "key": key}


# -- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", CORE_DOCS, ids=doc_id)
def test_manifest_validates_against_kubernetes_schema(doc: dict[str, Any]) -> None:
    """Every core object is valid for Kubernetes 1.30, unknown fields included (strict)."""
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_rejects_unknown_fields() -> None:
    """The validator used above does catch a misspelt field (it is not vacuous)."""
    doc = copy.deepcopy(find("Deployment", "invalidator"))
    doc["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest() -> None:
    """Each manifest in k8s/ is listed in kustomization.yaml, except the Secret example."""
    listed = set(kustomization(K8S)["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert present - {"secret.example.yaml"} == listed


def test_secret_example_is_never_applied() -> None:
    """kubectl apply -k never ships the placeholder DSN."""
    assert "secret.example.yaml" not in kustomization(K8S)["resources"]
    assert all(d["kind"] != "Secret" for d in DOCS)


def test_namespaced_objects_live_in_caching() -> None:
    """Every namespaced object, and kustomize itself, targets the guide's namespace."""
    assert kustomization(K8S)["namespace"] == NAMESPACE
    assert kustomization(MONITORING)["namespace"] == NAMESPACE
    for doc in DOCS + SECRET_EXAMPLE + MONITORING_DOCS:
        if doc["kind"] not in CLUSTER_SCOPED_KINDS:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc_id(doc)
    assert find("Namespace", NAMESPACE)


def test_kustomize_labels_leave_selectors_alone() -> None:
    """Common labels never reach selectors, which are immutable on the guide's workloads."""
    for directory in (K8S, MONITORING):
        data = kustomization(directory)
        assert "commonLabels" not in data
        assert all(entry.get("includeSelectors") is False for entry in data["labels"])


def test_images_entry_names_the_project_image() -> None:
    """kustomization.yaml's images entry is the image the invalidator containers use."""
    names = {entry["name"] for entry in kustomization(K8S)["images"]}
    used = {c["image"] for _, c in invalidator_containers()}
    assert used == {"pg-cache-invalidator"}
    assert used <= names


# -- selectors and ports ------------------------------------------------------------------


@pytest.mark.parametrize("workload", [w for w in workloads() if w["kind"] != "CronJob"], ids=doc_id)
def test_workload_selector_matches_its_pod_labels(workload: dict[str, Any]) -> None:
    """A Deployment's or StatefulSet's selector selects its own pod template."""
    selector = workload["spec"]["selector"]["matchLabels"]
    assert selects(selector, pod_template(workload)["metadata"]["labels"])


@pytest.mark.parametrize("service", of_kind("Service"), ids=doc_id)
def test_service_selects_exactly_one_workload(service: dict[str, Any]) -> None:
    """Each Service's selector matches the pods of one workload."""
    assert len(selected_workloads(service["spec"]["selector"])) == 1


@pytest.mark.parametrize("service", of_kind("Service"), ids=doc_id)
def test_service_target_ports_are_container_ports(service: dict[str, Any]) -> None:
    """Each Service port's targetPort is a port the selected containers declare."""
    (workload,) = selected_workloads(service["spec"]["selector"])
    ports = [p for c in containers(workload) for p in c.get("ports", [])]
    for port in service["spec"]["ports"]:
        assert port_matches(port.get("targetPort", port["port"]), ports), port


def test_pdb_selects_the_memcached_pods() -> None:
    """The PodDisruptionBudget covers the memcached StatefulSet and lets one pod go."""
    pdb = find("PodDisruptionBudget", "memcached")
    (workload,) = selected_workloads(pdb["spec"]["selector"]["matchLabels"])
    assert doc_id(workload) == "StatefulSet/memcached"
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("workload", workloads(), ids=doc_id)
def test_probe_ports_are_container_ports(workload: dict[str, Any]) -> None:
    """Every probe checks a port its own container declares."""
    for c in containers(workload):
        for probe in probes(c):
            assert port_matches(probe_port(probe), c.get("ports", [])), (c["name"], probe)


def test_invalidator_probes_use_healthz_and_readyz() -> None:
    """Liveness on /healthz (restarts a stuck loop), readiness on /readyz (never restarts)."""
    c = container(find("Deployment", "invalidator"), "invalidator")
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_http_listen_is_the_container_and_scrape_port() -> None:
    """http.listen, the container port and the prometheus.io/port annotation agree."""
    deployment = find("Deployment", "invalidator")
    c = container(deployment, "invalidator")
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == "http"]
    host, listen_port = parse_server(configmap_config()["http"]["listen"])
    annotations = pod_template(deployment)["metadata"]["annotations"]
    assert (host, listen_port) == ("0.0.0.0", port)
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/scrape"] == "true"


def test_metrics_service_includes_the_standby() -> None:
    """invalidator-metrics also publishes the never-ready standby, so both are scraped."""
    service = find("Service", "invalidator-metrics")
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in service["spec"]["ports"]] == [9464]


# -- the daemon's wiring ------------------------------------------------------------------


def test_invalidator_env_names_are_specs() -> None:
    """Containers of the project's image set only SPEC's INVALIDATOR_* variables."""
    for workload, c in invalidator_containers():
        names = {e["name"] for e in c.get("env", [])}
        assert names <= SPEC_ENV, (doc_id(workload), names - SPEC_ENV)
        assert {"INVALIDATOR_CONFIG", "INVALIDATOR_DSN_FILE", "INVALIDATOR_LOG_FORMAT"} <= names
        assert "INVALIDATOR_DSN" not in names  # the file, not the environment


def test_no_service_links_inject_invalidator_variables() -> None:
    """Service links are off, so no INVALIDATOR_METRICS_PORT-style variables appear."""
    for workload, _ in invalidator_containers():
        assert pod_template(workload)["spec"]["enableServiceLinks"] is False, doc_id(workload)


@pytest.mark.parametrize("workload", [w for w, _ in invalidator_containers()], ids=doc_id)
def test_dsn_is_the_secret_mounted_read_only_as_a_file(workload: dict[str, Any]) -> None:
    """INVALIDATOR_DSN_FILE names the file that Secret invalidator-db's key dsn becomes,
    mounted read-only, readable by the container's group only (fsGroup, mode 0440)."""
    (c,) = [c for w, c in invalidator_containers() if w is workload]
    path = env_value(c, "INVALIDATOR_DSN_FILE")["value"]
    found = mounted_file(workload, c, path)
    secret = found["volume"]["secret"]
    assert (secret["secretName"], found["key"]) == ("invalidator-db", "dsn")
    assert secret.get("optional", False) is False  # no DSN, no start: never a silent default
    assert "dsn" in secret_example("invalidator-db")["stringData"]
    mode = secret["defaultMode"]
    assert mode & 0o007 == 0 and mode & 0o040, oct(mode)  # group-readable, not world
    pod = pod_template(workload)["spec"]["securityContext"]
    assert pod["fsGroup"] == pod["runAsGroup"]


def env_texts(c: dict[str, Any]) -> Iterator[str]:
    for entry in c.get("env", []):
        yield entry["name"] + "=" + json.dumps(entry.get("value", ""))
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            yield f"{entry['name']} from secret {ref['name']}/{ref['key']}"
    for source in c.get("envFrom", []):
        yield json.dumps(source)


@pytest.mark.parametrize("workload", workloads(), ids=doc_id)
def test_no_dsn_in_any_environment(workload: dict[str, Any]) -> None:
    """No container's environment holds a DSN, a password, or the DSN Secret: no literal
    connection string, no secretKeyRef/envFrom of invalidator-db."""
    for c in containers(workload):
        for text in env_texts(c):
            assert not re.search(r"postgres(ql)?://|password|invalidator-db", text, re.I), (
                doc_id(workload),
                c["name"],
                text,
            )


def test_example_dsn_verifies_postgresqls_certificate_with_the_mounted_ca() -> None:
    """The Secret's example DSN is verify-full TLS whose sslrootcert is the file that the
    CA bundle Secret (invalidator-pg-ca, key ca.crt) becomes in every invalidator pod."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(secret_example("invalidator-db")["stringData"]["dsn"])
    assert params["sslmode"] == "verify-full"
    assert params["sslrootcert"] == "/etc/invalidator/pg-ca/ca.crt"
    assert params["password"] == "REPLACE-ME"
    assert "BEGIN CERTIFICATE" in secret_example("invalidator-pg-ca")["stringData"]["ca.crt"]
    for workload, c in invalidator_containers():
        found = mounted_file(workload, c, str(params["sslrootcert"]))
        secret = found["volume"]["secret"]
        assert (secret["secretName"], found["key"]) == ("invalidator-pg-ca", "ca.crt")


def test_log_format_is_json() -> None:
    """Pods log JSON lines."""
    for _, c in invalidator_containers():
        assert env_value(c, "INVALIDATOR_LOG_FORMAT")["value"] == "json"


@pytest.mark.usefixtures("pod_env")
def test_configmap_config_passes_the_daemons_validation() -> None:
    """config.yaml from the ConfigMap, with the pod's environment, is a valid configuration."""
    config = parse_config(configmap_config(), "configmap")
    assert config.source.dsn is not None
    assert config.source.slot == "cache_invalidator"
    assert [rule.qualified_table for rule in config.rules] == ["public.users"]


@pytest.mark.parametrize("workload", [w for w, _ in invalidator_containers()], ids=doc_id)
def test_config_is_mounted_where_invalidator_config_points(workload: dict[str, Any]) -> None:
    """The ConfigMap's config.yaml appears at INVALIDATOR_CONFIG, read-only."""
    (c,) = [c for w, c in invalidator_containers() if w is workload]
    path = PurePosixPath(env_value(c, "INVALIDATOR_CONFIG")["value"])
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod_template(workload)["spec"]["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] is True
    assert volume["configMap"]["name"] == "invalidator-config"
    assert [item["path"] for item in volume["configMap"]["items"]] == [path.name]
    assert path.name in find("ConfigMap", "invalidator-config")["data"]


def test_memcached_servers_are_the_statefulset_pods() -> None:
    """pools.default.servers are the strings the guide's apps use, one per memcached pod."""
    servers = configmap_config()["pools"]["default"]["servers"]
    assert servers == memcached_pod_addresses()
    assert servers == [f"memcached-{i}.memcached.caching.svc.cluster.local:11211" for i in range(3)]


def test_placement_is_hashclients() -> None:
    """The default pool hashes like pymemcache's HashClient (rendezvous)."""
    assert configmap_config()["pools"]["default"]["hashing"] == "rendezvous"


def test_memcached_is_the_guides_headless_statefulset() -> None:
    """Headless Service memcached (port 11211, named memcached) governs StatefulSet memcached."""
    service = find("Service", "memcached")
    statefulset = find("StatefulSet", "memcached")
    assert service["spec"]["clusterIP"] == "None"
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("memcached", 11211)]
    assert statefulset["spec"]["serviceName"] == "memcached"
    assert statefulset["spec"]["selector"]["matchLabels"] == {"app": "memcached"}
    assert statefulset["spec"]["replicas"] == 3


def test_memcached_runs_with_the_guides_sizes() -> None:
    """memcached 1.6 on alpine with -m 512 -c 1024 -t 4 and the guide's resources."""
    c = container(find("StatefulSet", "memcached"), "memcached")
    assert c["image"] == "memcached:1.6-alpine"
    assert c["command"] + c["args"] == ["memcached", "-m", "512", "-c", "1024", "-t", "4"]
    assert c["resources"] == {
        "requests": {"memory": "512Mi", "cpu": "250m"},
        "limits": {"memory": "1Gi", "cpu": "1000m"},
    }


def test_termination_grace_exceeds_drain_timeout() -> None:
    """SIGTERM's drain (--drain-timeout) ends well inside terminationGracePeriodSeconds."""
    deployment = find("Deployment", "invalidator")
    c = container(deployment, "invalidator")
    assert c["command"] + c["args"][:1] == ["invalidator", "run"]
    grace = pod_template(deployment)["spec"]["terminationGracePeriodSeconds"]
    assert grace >= drain_timeout(c["args"]) + 10


def test_rollout_never_waits_for_the_standby() -> None:
    """Old pods go all at once, so a rollout never waits on a replica that cannot get ready."""
    deployment = find("Deployment", "invalidator")
    strategy = deployment["spec"]["strategy"]
    assert deployment["spec"]["replicas"] == 2
    assert strategy["type"] == "Recreate" or strategy["rollingUpdate"]["maxUnavailable"] == "100%"


def test_no_disruption_budget_protects_the_invalidator() -> None:
    """No PDB covers the invalidator: it would block node drains (the standby is never ready)."""
    invalidator_labels = pod_template(find("Deployment", "invalidator"))["metadata"]["labels"]
    for pdb in of_kind("PodDisruptionBudget"):
        assert not selects(pdb["spec"]["selector"]["matchLabels"], invalidator_labels)


def test_cache_warmer_runs_invalidator_warm() -> None:
    """The CronJob runs `invalidator warm` every 30 minutes, never two at once."""
    cronjob = find("CronJob", "cache-warmer")
    c = container(cronjob, "warmer")
    assert c["command"] == ["invalidator", "warm"]
    assert cronjob["spec"]["schedule"] == "*/30 * * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_cache_warmer_shares_the_daemons_config_and_secret() -> None:
    """The warmer reads the same ConfigMap, Secret and image as the daemon."""
    daemon = container(find("Deployment", "invalidator"), "invalidator")
    warmer = container(find("CronJob", "cache-warmer"), "warmer")
    assert daemon["image"] == warmer["image"]
    assert daemon["env"] == warmer["env"]
    assert daemon["volumeMounts"] == warmer["volumeMounts"]


# -- security -----------------------------------------------------------------------------


@pytest.mark.parametrize("workload", workloads(), ids=doc_id)
def test_pods_run_as_non_root_under_restricted_rules(workload: dict[str, Any]) -> None:
    """Pod Security 'restricted': non-root numeric user, RuntimeDefault seccomp, no caps."""
    spec = pod_template(workload)["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for c in containers(workload):
        context = c["securityContext"]
        user = context.get("runAsUser", spec["securityContext"].get("runAsUser"))
        assert isinstance(user, int) and user > 0, c["name"]
        assert context["runAsNonRoot"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}


def test_invalidator_user_is_the_images_user() -> None:
    """runAsUser is the numeric USER the Dockerfile creates."""
    (user,) = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    for workload, c in invalidator_containers():
        assert c["securityContext"]["runAsUser"] == int(user), doc_id(workload)


# -- exporter -----------------------------------------------------------------------------


def test_exporter_passes_memcached_address_once() -> None:
    """The exporter's --memcached.address is not repeated (it would refuse to start)."""
    c = container(find("Deployment", "memcached-exporter"), "exporter")
    flags = [a for a in c["args"] if a.startswith("--memcached.address")]
    assert flags == ["--memcached.address="]


def test_exporter_scrapes_every_memcached_pod() -> None:
    """The exporter's ServiceMonitor asks /scrape for exactly the apps' memcached pods."""
    monitor = find("ServiceMonitor", "memcached-exporter", MONITORING_DOCS)
    targets = [t for e in monitor["spec"]["endpoints"] for t in e["params"]["target"]]
    assert targets == memcached_pod_addresses()
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/scrape"}


# -- monitoring ---------------------------------------------------------------------------


@pytest.mark.parametrize("doc", MONITORING_DOCS, ids=doc_id)
def test_monitoring_object_is_well_formed(doc: dict[str, Any]) -> None:
    """ServiceMonitor/PrometheusRule objects carry the fields the operator requires."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["metadata"]["name"]
    if doc["kind"] == "ServiceMonitor":
        assert doc["spec"]["selector"]["matchLabels"]
        for endpoint in doc["spec"]["endpoints"]:
            assert endpoint["port"]
            assert PROMETHEUS_DURATION.match(endpoint["interval"])
    else:
        assert doc["kind"] == "PrometheusRule"
        for group in doc["spec"]["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert rule["alert"] and rule["expr"]
                assert PROMETHEUS_DURATION.match(rule.get("for", "0s"))
                assert rule["labels"]["severity"] in {"critical", "warning"}
                assert rule["annotations"]["summary"]


@pytest.mark.parametrize("monitor", of_kind("ServiceMonitor", MONITORING_DOCS), ids=doc_id)
def test_servicemonitor_finds_its_service_port(monitor: dict[str, Any]) -> None:
    """A ServiceMonitor selects one Service by label and scrapes a port that Service names."""
    selector = monitor["spec"]["selector"]["matchLabels"]
    (service,) = [s for s in of_kind("Service") if selects(selector, s["metadata"]["labels"])]
    names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= names


def test_alerts_cover_the_failure_modes() -> None:
    """The PrometheusRule has the alerts operators need."""
    assert {r["alert"] for r in alert_rules()} >= {
        "InvalidatorNotStreaming",
        "InvalidationLagHigh",
        "ReplicationSlotWalRetained",
        "MemcachedErrors",
        "UnbuildableKeys",
        "InvalidatorContinuityLost",
        "CacheStale",
    }


def test_alerts_use_only_spec_metrics() -> None:
    """Every metric an alert queries is one of SPEC's."""
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= SPEC_METRICS, (rule["alert"], names - SPEC_METRICS)


def test_promql_brackets_balance() -> None:
    """Alert and dashboard expressions have balanced (), [] and {}."""
    for expr in [r["expr"] for r in alert_rules()] + dashboard_exprs():
        stack: list[str] = []
        for char in expr:
            if char in "([{":
                stack.append({"(": ")", "[": "]", "{": "}"}[char])
            elif char in ")]}":
                assert stack and stack.pop() == char, expr
        assert not stack, expr


def test_dashboard_uses_only_spec_metrics() -> None:
    """Every dashboard query names SPEC metrics only."""
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names and names <= SPEC_METRICS, expr


def test_dashboard_shows_every_operational_metric() -> None:
    """The dashboard charts every SPEC metric but the raw LSN."""
    shown = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    assert shown == SPEC_METRICS - {"invalidator_confirmed_lsn"}


def test_dashboard_configmap_is_labelled_for_grafana() -> None:
    """The generated ConfigMap carries grafana_dashboard: "1" under a stable name."""
    (generator,) = kustomization(MONITORING)["configMapGenerator"]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    assert generator["options"]["disableNameSuffixHash"] is True


def test_spec_metrics_are_what_the_daemon_exports() -> None:
    """SPEC's metric names are exactly the series families invalidator.metrics registers."""

    def exposed(family: Metric) -> str:
        return family.name + "_total" if family.type == "counter" else family.name

    assert {exposed(f) for f in Metrics().registry.collect()} == SPEC_METRICS
