"""deploy/: what the generated Kubernetes and Compose files say, and that it comes from the matrix."""

import tarfile

import pytest
import yaml

from dsv4_images import matrix, render, sources
from dsv4_images.errors import UserError
from dsv4_images.deploy import compose, facts, k8s, render_files
from dsv4_images.in_image import runtime

M = matrix.load()
FILES = render_files(M)
GPU_TARGETS = [t.name for t in M.targets.values() if t.is_cuda]


def docs(rel: str, files=FILES) -> list[dict]:
    return [d for d in yaml.safe_load_all(files[rel]) if d]


def kind(rel: str, wanted: str, files=FILES) -> list[dict]:
    return [d for d in docs(rel, files) if d["kind"] == wanted]


def serve_pods(target: str, files=FILES) -> list[dict]:
    """Every serving pod spec: the Deployment's, the LWS leader's and worker's."""
    base = f"deploy/k8s/{target}"
    dep = kind(f"{base}/single-node/server.yaml", "Deployment", files)[0]
    lws = kind(f"{base}/multi-node/server.yaml", "LeaderWorkerSet", files)[0]["spec"]["leaderWorkerTemplate"]
    return [dep["spec"]["template"]["spec"], lws["leaderTemplate"]["spec"], lws["workerTemplate"]["spec"]]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def with_serve(target: str, **changes) -> matrix.Matrix:
    t = M.targets[target]
    changed = t.model_copy(update={"serve": t.serve.model_copy(update=changes)})
    return M.model_copy(update={"targets": {**M.targets, target: changed}})


def test_every_gpu_target_gets_both_kubernetes_flavours_and_every_target_a_compose_file():
    for target in GPU_TARGETS:
        for flavour in ("single-node", "multi-node"):
            for name in ("kustomization", "values", "cache", "server", "router"):
                assert f"deploy/k8s/{target}/{flavour}/{name}.yaml" in FILES
    assert not any(rel.startswith("deploy/k8s/cpu/") for rel in FILES)
    assert {f"deploy/compose/{t}.yaml" for t in M.targets} <= set(FILES)


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_pods_take_the_targets_tp_in_gpus_and_run_dsv4_serve_with_real_probes(target):
    t = M.targets[target]
    for i, pod in enumerate(serve_pods(target)):
        (c,) = pod["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == t.serve.tensor_parallel_size
        assert c["command"] == ["dsv4-serve"]
        assert c["image"] == f"ghcr.io/{M.project.default_owner}/dsv4-flash:{t.tags[0]}"
        assert env_of(c)["MODEL"] == t.serve.model
        assert env_of(c)["HF_TOKEN"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN", "optional": True}
        if i < 2:  # the pods that serve HTTP: the model must answer, not only /health
            assert c["startupProbe"]["exec"]["command"] == ["dsv4-serve", "--ready"]
            assert c["readinessProbe"]["exec"]["command"] == ["dsv4-serve", "--ready"]
            assert c["livenessProbe"]["exec"]["command"] == ["dsv4-serve", "--healthcheck"]
            assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 3600
            assert c["ports"] == [{"name": "http", "containerPort": t.serve.port}]
        else:  # headless workers serve no HTTP
            assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(c)


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_pods_run_as_any_non_root_uid_in_group_0_without_privileges(target):
    for pod in serve_pods(target) + [kind(f"deploy/k8s/{target}/single-node/router.yaml", "Deployment")[0]["spec"]["template"]["spec"]]:
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsGroup"] == 0 and sc["fsGroup"] == 0 and "runAsUser" not in sc
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "runAsNonRoot": True}


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_shm_is_memory_backed_and_the_cache_volume_sits_where_the_image_keeps_its_caches(target, tmp_path):
    image_home = M.targets[target].image_env()["HOME"]
    variables, _ = runtime.prepare_caches({"HOME": str(tmp_path)}, M.targets[target].build_id())
    for pod in serve_pods(target):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": k8s.SHM_SIZE}
        assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == f"dsv4-flash-{target}-cache"
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["shm"] == "/dev/shm"
        assert mounts["cache"] == f"{image_home}/.cache"
        for key, path in variables.items():  # what the entrypoint sets: every cache lives on the volume
            assert path.startswith(f"{tmp_path}/.cache/"), key
    (pvc,) = kind(f"deploy/k8s/{target}/single-node/cache.yaml", "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_a_hugging_face_cache_outside_the_cache_volume_is_refused():
    """The deployments mount one volume at $HOME/.cache; an HF_HOME elsewhere would download 172 GB per pod."""
    with pytest.raises(UserError, match=r"^targets.sm120: HF_HOME=/data/hf is not under /home/dsv4/.cache, the cache volume$"):
        render_files(with_serve("sm120", env={"HF_HOME": "/data/hf"}))
    render_files(with_serve("sm120", env={"HF_HOME": "/home/dsv4/.cache/hf"}))  # under it: fine


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_a_rollout_asks_for_no_gpus_beyond_the_replicas(target):
    dep = kind(f"deploy/k8s/{target}/single-node/server.yaml", "Deployment")[0]["spec"]["strategy"]
    lws = kind(f"deploy/k8s/{target}/multi-node/server.yaml", "LeaderWorkerSet")[0]["spec"]["rolloutStrategy"]
    assert dep["rollingUpdate"]["maxSurge"] == 0 and lws["rollingUpdateConfiguration"]["maxSurge"] == 0


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_multi_node_uses_vllms_own_flags_with_the_lws_environment(target):
    lws = kind(f"deploy/k8s/{target}/multi-node/server.yaml", "LeaderWorkerSet")[0]["spec"]
    common = ["--pipeline-parallel-size", "$(LWS_GROUP_SIZE)", "--nnodes", "$(LWS_GROUP_SIZE)",
              "--node-rank", "$(LWS_WORKER_INDEX)", "--master-addr", "$(LWS_LEADER_ADDRESS)"]
    leader = lws["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    worker = lws["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
    assert leader["args"] == common and worker["args"] == common + ["--headless"]
    assert lws["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert lws["leaderWorkerTemplate"]["leaderTemplate"]["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    assert lws["leaderWorkerTemplate"]["workerTemplate"]["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"


@pytest.mark.network
def test_the_multi_node_flags_exist_in_the_pinned_vllm_source():
    sdist = sources.fetch_sdist(M.targets["sm100"])
    with tarfile.open(sdist) as tar:
        def read(path):
            return tar.extractfile(f"vllm-{M.targets['sm100'].vllm.version}/{path}").read().decode()
        arg_utils, cli_args = read("vllm/engine/arg_utils.py"), read("vllm/entrypoints/common/cli_args.py")
    for flag in ("--pipeline-parallel-size", "--nnodes", "--node-rank", "--master-addr"):
        assert f'"{flag}"' in arg_utils, flag
    assert '"--headless"' in cli_args


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_the_router_discovers_exactly_the_serving_pods(target):
    for flavour in ("single-node", "multi-node"):
        router = kind(f"deploy/k8s/{target}/{flavour}/router.yaml", "Deployment")[0]["spec"]["template"]["spec"]
        args = router["containers"][0]["args"]
        selector = args[args.index("--selector") + 1:args.index("--service-discovery-port")]
        service = kind(f"deploy/k8s/{target}/{flavour}/server.yaml", "Service")[0]
        assert dict(s.split("=", 1) for s in selector) == service["spec"]["selector"]
        assert args[args.index("--service-discovery-port") + 1] == str(M.targets[target].serve.port)
        assert router["containers"][0]["command"] == ["vllm-router"]
        (role,) = kind(f"deploy/k8s/{target}/{flavour}/router.yaml", "Role")
        assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def test_only_the_pcie_target_carries_the_nccl_p2p_switch_with_its_reason():
    for target in GPU_TARGETS:
        pcie = bool(M.targets[target].serve.disable_custom_all_reduce)
        for pod in serve_pods(target):
            assert ("NCCL_P2P_DISABLE" in env_of(pod["containers"][0])) == pcie
        values = FILES[f"deploy/k8s/{target}/single-node/values.yaml"]
        assert ("ncclP2PDisable: '0'" in values) == pcie and ("rtx6kpro#15" in values) == pcie
        assert ("NCCL_P2P_DISABLE: ${NCCL_P2P_DISABLE:-0}" in FILES[f"deploy/compose/{target}.yaml"]) == pcie
    assert "sm120" in GPU_TARGETS and M.targets["sm120"].serve.disable_custom_all_reduce is True


def test_a_matrix_change_reaches_every_deployment_file():
    changed = render_files(with_serve("sm120", tensor_parallel_size=4, port=9000, model="acme/other"))
    for pod in serve_pods("sm120", changed):
        c = pod["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 4 and env_of(c)["MODEL"] == "acme/other"
    assert "model: acme/other" in changed["deploy/k8s/sm120/multi-node/values.yaml"]
    args = kind("deploy/k8s/sm120/single-node/router.yaml", "Deployment", changed)[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--service-discovery-port") + 1] == "9000"
    cfg = docs("deploy/compose/sm120.yaml", changed)[0]
    assert cfg["services"]["serve-1"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["4", "5", "6", "7"]
    assert "http://serve-1:9000" in cfg["services"]["router"]["command"]
    unchanged = {k: v for k, v in changed.items() if "sm120" not in k}
    assert unchanged == {k: v for k, v in FILES.items() if "sm120" not in k}


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_every_value_has_a_replacement_and_every_replacement_a_value(target):
    for flavour in ("single-node", "multi-node"):
        values = docs(f"deploy/k8s/{target}/{flavour}/values.yaml")[0]
        assert values["metadata"]["annotations"] == {"config.kubernetes.io/local-config": "true"}
        keys = set(values) - {"apiVersion", "kind", "metadata"}
        kust = docs(f"deploy/k8s/{target}/{flavour}/kustomization.yaml")[0]
        sources_ = {r["source"]["fieldPath"] for r in kust["replacements"]}
        assert keys == sources_
        assert {"image", "model", "hfTokenSecret", "storageClass", "storageSize", "replicas"} <= keys
        assert ("nodes" in keys) == (flavour == "multi-node")
        assert kust["resources"][0] == "values.yaml"


@pytest.mark.parametrize("target", list(M.targets))
def test_compose_runs_replicas_on_separate_gpus_behind_the_router(target):
    t = M.targets[target]
    cfg = docs(f"deploy/compose/{target}.yaml")[0]
    replicas = sorted(name for name in cfg["services"] if name.startswith("serve-"))
    assert len(replicas) == compose.REPLICAS
    seen = []
    for name in replicas:
        svc = cfg["services"][name]
        assert svc["entrypoint"] == ["dsv4-serve"] and svc["healthcheck"]["test"] == ["CMD", "dsv4-serve", "--ready"]
        assert svc["image"] == f"${{DSV4_IMAGE:-ghcr.io/dsv4-flash/dsv4-flash:{t.tags[0]}}}"
        if t.is_cuda:
            (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
            assert len(device["device_ids"]) == t.serve.tensor_parallel_size
            seen += device["device_ids"]
            assert svc["ipc"] == "host" and svc["ulimits"]["memlock"] == -1
        else:
            assert "deploy" not in svc and svc["shm_size"] == compose.CPU_SHM
    assert len(seen) == len(set(seen))
    router = cfg["services"]["router"]
    assert router["entrypoint"] == ["vllm-router"]
    cmd = router["command"]
    urls = cmd[cmd.index("--worker-urls") + 1:cmd.index("--policy")]
    assert urls == [f"http://{name}:{t.serve.port}" for name in replicas]
    assert router["depends_on"] == {name: {"condition": "service_healthy"} for name in replicas}
