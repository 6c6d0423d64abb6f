"""deploy/kubernetes/: every manifest valid against Kubernetes' schemas (offline, with the
kubernetes-validate package), and the same commands and environment as docker-compose.yml."""

from __future__ import annotations

import glob
import os

import kubernetes_validate
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "deploy", "kubernetes")
VERSION = "1.30.0"  # a release every maintained cluster serves (schemas bundled with the package)
# docker-compose.yml's service -> the manifest's workload that runs the same command
SAME = {"create": "tradeoff-create", "proxy": "tradeoff-proxy", "worker": "tradeoff-workers",
        "dashboard": "tradeoff-dashboard"}  # fmt: skip


def manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        with open(path) as f:
            out += [(os.path.basename(path), doc) for doc in yaml.safe_load_all(f) if doc]
    return out


def workloads() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] in ("Job", "Deployment")}


def container(workload: dict) -> dict:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def compose() -> dict:
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        return yaml.safe_load(f)["services"]


@pytest.mark.parametrize(
    "name, doc", manifests(), ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"]
)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(name, doc):
    kubernetes_validate.validate(doc, VERSION, strict=True)  # raises on any unknown or wrong field


def test_a_broken_manifest_is_caught():
    doc = dict(workloads()["tradeoff-workers"])
    doc["spec"] = {**doc["spec"], "parallelism": "many"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_kustomization_applies_everything_but_the_workers_and_the_example_secret():
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        listed = set(yaml.safe_load(f)["resources"])
    files = {name for name, _ in manifests()}
    assert listed == files - {"workers-job.yaml", "secret.example.yaml"}


def test_the_containers_run_the_compose_services_commands():
    services, loads = compose(), workloads()
    for service, workload in SAME.items():
        assert container(loads[workload])["command"] == services[service]["command"], service
        # the same environment, by name: each compose variable is set in the pod too
        env = {e["name"]: e for e in container(loads[workload])["env"]}
        wanted = services[service].get("environment") or {}
        assert set(wanted) <= set(env), (service, set(wanted) - set(env))


def test_the_database_url_comes_from_a_secret_and_workers_use_the_proxy():
    loads = workloads()
    for name in ("tradeoff-create", "tradeoff-proxy", "tradeoff-dashboard"):
        storage = {e["name"]: e for e in container(loads[name])["env"]}["TRADEOFF_STORAGE"]
        assert storage["valueFrom"]["secretKeyRef"] == {"name": "tradeoff-storage", "key": "url"}, name
    for _, doc in manifests():  # no literal database URL, so no password, in an applied manifest
        if doc["kind"] != "Secret":
            assert "postgresql" not in yaml.safe_dump(doc)
    services = {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == "Service"}
    proxy = services["tradeoff-proxy"]
    port = proxy["spec"]["ports"][0]["port"]
    workers = {e["name"]: e for e in container(loads["tradeoff-workers"])["env"]}
    assert workers["TRADEOFF_STORAGE"]["value"] == f"grpc://tradeoff-proxy:{port}"
    command = container(loads["tradeoff-proxy"])["command"]
    assert command[command.index("--port") + 1] == str(port)
    assert (
        proxy["spec"]["selector"].items()
        <= loads["tradeoff-proxy"]["spec"]["template"]["metadata"]["labels"].items()
    )
    # and in compose: the workers reach the proxy service on the port it listens on
    compose_proxy = compose()["proxy"]["command"]
    assert compose()["worker"]["environment"]["TRADEOFF_STORAGE"] == (
        f"grpc://proxy:{compose_proxy[compose_proxy.index('--port') + 1]}"
    )


def test_nothing_is_exposed_outside_the_cluster():
    for _, doc in manifests():
        assert doc["kind"] not in ("Ingress", "Gateway")
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP"
            assert all("nodePort" not in p for p in doc["spec"]["ports"])
    policies = [doc for _, doc in manifests() if doc["kind"] == "NetworkPolicy"]
    guarded = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in policies}
    assert "tradeoff-proxy" in guarded  # the proxy reads and writes the study: tradeoff's pods only
    assert "--allow-writes" not in container(workloads()["tradeoff-dashboard"])["command"]
    assert "--allow-delete" not in container(workloads()["tradeoff-proxy"])["command"]


def test_the_workers_are_a_work_queue_job_that_finishes_its_trials():
    job = workloads()["tradeoff-workers"]
    spec = job["spec"]
    assert spec["parallelism"] >= 2 and "completions" not in spec  # workers exit 0 at the budget
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    # SIGTERM lets a worker finish its trial: as long as compose's stop_grace_period (5 minutes)
    assert pod["terminationGracePeriodSeconds"] >= 300
    assert compose()["worker"]["stop_grace_period"] == "5m"
    limits = container(job)["resources"]["limits"]
    assert limits["cpu"]  # torch's threads follow it (worker.available_cores reads cpu.max)
