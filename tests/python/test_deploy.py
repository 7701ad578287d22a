"""The deployment files, checked without a container engine (these machines have none): the compose
file against the compose specification, the Kubernetes manifests (as kustomize renders them) against
Kubernetes' own schemas, and every file either of them mounts exists."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from ruamel.yaml import YAML

ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = pathlib.Path(sys.executable).parent
KUSTOMIZE = os.environ.get("CHAOSEATER_KUSTOMIZE") or shutil.which("kustomize")


def run(*args, **kwargs):
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, args))} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def compose():
    return YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())


def test_the_compose_file_follows_the_compose_specification():
    run(VENV_BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", ROOT / "docker-compose.yml")


def test_every_file_the_compose_file_mounts_exists():
    spec = compose()
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"service {name} mounts {source}, which is missing"
        for needs in service.get("depends_on", {}):
            assert needs in spec["services"], f"service {name} depends on {needs}, which is not a service"
        for secret in service.get("secrets", []):
            assert secret in spec["secrets"], f"service {name} uses the undeclared secret {secret}"
    for name, secret in spec["secrets"].items():
        assert (ROOT / secret["file"]).is_file(), f"secret {name}: {secret['file']} is missing"


def test_compose_keeps_secrets_out_of_the_file():
    """Tokens and passwords are secrets files, never inline values."""
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key.upper() for word in ("TOKEN", "PASSWORD", "KEY")):
                assert key.endswith("__FILE") or str(value).startswith("/run/secrets/"), f"{name}: {key} is inline"


def kustomize_build(directory):
    if not KUSTOMIZE:
        pytest.fail("kustomize not found: .ci/run installs it and sets CHAOSEATER_KUSTOMIZE")
    return run(KUSTOMIZE, "build", directory)


def validate_manifests(text, tmp_path):
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(text)
    run(VENV_BIN / "kubernetes-validate", "--strict", "--quiet", rendered)
    return list(YAML(typ="safe").load_all(text))


def test_the_kubernetes_manifests_validate_strictly(tmp_path):
    docs = validate_manifests(kustomize_build(ROOT / "deploy" / "k8s"), tmp_path)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ConfigMap", "Deployment", "Job", "Namespace", "Secret", "Service", "StatefulSet"], kinds
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "chaoseater", doc["metadata"]["name"]
    pods = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(pods) == 5, "the processors, and an agent and a model server per region"
    for workload in pods:
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in spec["containers"]:
            what = f"{workload['metadata']['name']}/{container['name']}"
            assert container["readinessProbe"]["httpGet"]["path"] == "/health", what
            assert container["livenessProbe"]["httpGet"]["path"] == "/health", what
            assert {"requests", "limits"} <= set(container["resources"]), what
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, what
            assert not container["securityContext"].get("privileged"), what
        assert not any("hostPath" in v for v in spec.get("volumes", [])), "host access is off by default"
    processors = next(d for d in docs if d["kind"] == "StatefulSet")
    assert processors["spec"]["replicas"] == 1
    assert processors["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    scraped = [d for d in docs if d["kind"] == "Service" and d["metadata"].get("annotations", {}).get("prometheus.io/scrape")]
    assert [s["metadata"]["name"] for s in scraped] == ["chaoseater-processors"]
    # Every ConfigMap and Secret a pod mounts is one kustomize generated (names carry its hash).
    generated = {d["metadata"]["name"] for d in docs if d["kind"] in ("ConfigMap", "Secret")}
    for workload in pods + [d for d in docs if d["kind"] == "Job"]:
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            ref = (volume.get("configMap") or {}).get("name") or (volume.get("secret") or {}).get("secretName")
            if ref:
                assert ref in generated, f"{workload['metadata']['name']} mounts {ref}, which is not generated"


def test_the_host_faults_component_grants_the_cgroup_tree_and_nothing_more(tmp_path):
    docs = validate_manifests(kustomize_build(ROOT / "deploy" / "k8s-host-faults"), tmp_path)
    for workload in (d for d in docs if d["kind"] == "Deployment"):
        spec = workload["spec"]["template"]["spec"]
        host_paths = [v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v]
        if workload["metadata"]["labels"]["app.kubernetes.io/name"] == "agent":
            assert host_paths == ["/sys/fs/cgroup"], workload["metadata"]["name"]
            container = spec["containers"][0]
            assert not container["securityContext"].get("privileged")
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        else:
            assert host_paths == [], f"{workload['metadata']['name']} is not an agent"


@pytest.mark.parametrize("secrets", ["deploy/compose/secrets", "deploy/k8s/secrets"])
def test_the_dispatchers_tokens_are_the_agents_own(secrets):
    import tomllib

    directory = ROOT / secrets
    tokens = tomllib.loads((directory / "agent_tokens.toml").read_text())
    assert sorted(tokens) == ["eu-west", "us-east"]
    for region, token in tokens.items():
        own = (directory / f"agent_token_{region.replace('-', '_')}").read_text().strip()
        assert own == token, f"{secrets}: {region}'s agent and the dispatcher hold different tokens"
