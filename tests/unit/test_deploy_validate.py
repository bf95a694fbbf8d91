"""deploy/ validates: Kubernetes objects against the strict API schemas (kubernetes-validate, Kubernetes
1.37), the LeaderWorkerSet against its v1 API schema, the kustomizations through real kustomize
(kubectl), the Compose files through real docker-compose; and a broken file fails each check."""

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dsv4_images import REPO_ROOT
from dsv4_images.deploy import k8s, validate
from ..conftest import need

K8S_FILES = sorted(p for p in (REPO_ROOT / "deploy" / "k8s").rglob("*.yaml") if p.name not in ("kustomization.yaml", "values.yaml"))
COMPOSE_FILES = sorted((REPO_ROOT / "deploy" / "compose").glob("*.yaml"))
KUSTOMIZATIONS = sorted(p.parent for p in (REPO_ROOT / "deploy" / "k8s").rglob("kustomization.yaml"))


def objects(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def first(kind: str) -> dict:
    for path in K8S_FILES:
        for obj in objects(path):
            if obj["kind"] == kind:
                return copy.deepcopy(obj)
    raise AssertionError(f"no {kind} generated")


def test_the_validated_kubernetes_version_is_the_newest_kubernetes_validate_knows():
    import kubernetes_validate
    assert kubernetes_validate.utils.latest_version().startswith(k8s.K8S_VERSION)


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT / "deploy" / "k8s")))
def test_every_generated_object_is_valid(path):
    objs = objects(path)
    assert objs
    for obj in objs:
        assert validate.errors(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_all_kinds_are_checked():
    kinds = {obj["kind"] for path in K8S_FILES for obj in objects(path)}
    assert kinds == {"Deployment", "LeaderWorkerSet", "Service", "PersistentVolumeClaim", "ServiceAccount", "Role",
                     "RoleBinding"}


def _set(obj: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return obj


_DELETE = object()
BROKEN = [  # (kind, path, value, what the error names)
    ("Deployment", "spec.template.spec.containers.0.imagePullPolicyy", "Always", "imagePullPolicyy"),
    ("Deployment", "spec.replicas", "two", "replicas"),
    ("Deployment", "spec.template.spec.containers.0.resources.limits", ["nvidia.com/gpu"], "limits"),
    ("Deployment", "spec.template.spec.containers.0.name", _DELETE, "name"),
    ("Deployment", "spec.template.spec.securityContext.runAsGroup", "root", "runAsGroup"),
    ("Service", "spec.ports.0.port", "http", "port"),
    ("PersistentVolumeClaim", "spec.accessMode", ["ReadWriteMany"], "accessMode"),
    ("RoleBinding", "roleRef", _DELETE, "roleRef"),
    ("LeaderWorkerSet", "spec.leaderWorkerTemplate.size", "2", "size"),
    ("LeaderWorkerSet", "spec.leaderWorkerTemplate.restartPolicy", "Always", "restartPolicy"),
    ("LeaderWorkerSet", "spec.leaderWorkerTemplate.workerTemplates", {}, "workerTemplates"),
    ("LeaderWorkerSet", "spec.leaderWorkerTemplate.workerTemplate.spec.containers.0.commands", ["x"], "commands"),
    ("LeaderWorkerSet", "spec.leaderWorkerTemplate.leaderTemplate.spec.volumes.0.emptyDir.sizeLimit", {"Gi": 16}, "sizeLimit"),
    ("LeaderWorkerSet", "spec.leaderWorkerTemplate.workerTemplate", _DELETE, "workerTemplate"),
    ("LeaderWorkerSet", "spec.startupPolicy", "LeaderFirst", "startupPolicy"),
]


@pytest.mark.parametrize("kind,path,value,named", BROKEN, ids=[f"{k}:{p}" for k, p, _, _ in BROKEN])
def test_a_wrong_field_or_type_fails_validation(kind, path, value, named):
    obj = first(kind)
    assert validate.errors(obj) == []
    problems = validate.errors(_set(obj, path, value))
    assert problems and named in " ".join(problems), problems


def test_the_lws_schema_is_strict_at_every_level_it_defines():
    def walk(schema, where):
        if schema.get("type") == "object" and "properties" in schema:
            assert schema["additionalProperties"] is False, where
            for key, sub in schema["properties"].items():
                walk(sub, f"{where}.{key}")
    walk(validate.LWS_SCHEMA, "LeaderWorkerSet")


# ---- real kustomize (kubectl) ----------------------------------------------------------------

def kustomize(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    need(kubectl is not None, "kubectl (>= 1.27, with kustomize v5) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(REPO_ROOT / "deploy" / "k8s")))
def test_each_kustomization_builds_into_valid_objects_without_the_values_object(directory):
    objs = kustomize(directory)
    assert "Values" not in {o["kind"] for o in objs}
    for obj in objs:
        assert obj["metadata"]["namespace"] == "dsv4-flash"
        assert validate.errors(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_the_values_a_user_sets_reach_the_manifests(tmp_path):
    directory = tmp_path / "multi-node"
    shutil.copytree(REPO_ROOT / "deploy" / "k8s" / "sm120" / "multi-node", directory)
    values = yaml.safe_load((directory / "values.yaml").read_text())
    values.update(image="registry.example/acme/dsv4-flash@sha256:" + "a" * 64, routerImage="registry.example/acme/router:1",
                  model="canada-quant/DeepSeek-V4-Flash-W4A16-FP8-MTP", hfTokenSecret="my-hf", storageClass="cephfs",
                  storageSize="1Ti", replicas=3, nodes=4, ncclP2PDisable="1")
    (directory / "values.yaml").write_text(yaml.safe_dump(values))
    kust = directory / "kustomization.yaml"
    kust.write_text(kust.read_text().replace("namespace: dsv4-flash", "namespace: llm"))
    objs = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(directory)}
    for obj in objs.values():
        assert validate.errors(obj) == [] and obj["metadata"]["namespace"] == "llm"
    lws = objs[("LeaderWorkerSet", "dsv4-flash-sm120")]["spec"]
    assert lws["replicas"] == 3 and lws["leaderWorkerTemplate"]["size"] == 4
    for role in ("leaderTemplate", "workerTemplate"):
        (c,) = lws["leaderWorkerTemplate"][role]["spec"]["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert c["image"] == values["image"]
        assert env["MODEL"]["value"] == values["model"] and env["NCCL_P2P_DISABLE"]["value"] == "1"
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "my-hf"
    pvc = objs[("PersistentVolumeClaim", "dsv4-flash-sm120-cache")]["spec"]
    assert pvc["storageClassName"] == "cephfs" and pvc["resources"]["requests"]["storage"] == "1Ti"
    router = objs[("Deployment", "dsv4-flash-sm120-router")]["spec"]["template"]["spec"]["containers"][0]
    assert router["image"] == "registry.example/acme/router:1"
    assert objs[("RoleBinding", "dsv4-flash-sm120-router")]["subjects"][0]["namespace"] == "llm"


# ---- real docker-compose ---------------------------------------------------------------------

def compose_config(path: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("docker-compose")
    need(tool is not None, "docker-compose (Debian's 1.29) is not installed")
    return subprocess.run([tool, "-f", str(path), "--project-directory", str(path.parent), "config", "-q"],
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_pass_docker_compose_config(path):
    out = compose_config(path)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("old,new,named", [("    healthcheck:", "    healthchek:", "healthchek"),
                                           ("      retries: 3", "      retries: three", "retries"),
                                           ("    shm_size: 1g", "    shm_size: [1g]", "shm_size")])
def test_a_broken_compose_file_fails_docker_compose_config(tmp_path, old, new, named):
    text = (REPO_ROOT / "deploy" / "compose" / "cpu.yaml").read_text()
    assert old in text
    broken = tmp_path / "cpu.yaml"
    broken.write_text(text.replace(old, new))
    out = compose_config(broken)
    assert out.returncode != 0 and named in out.stderr, out.stderr
