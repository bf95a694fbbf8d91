"""Kubernetes manifests for one GPU target: deploy/k8s/<target>/{single-node,multi-node}/.

Each directory is a kustomization (`kubectl apply -k DIR`, kubectl >= 1.27). Its values.yaml is a
local-config object (never sent to the cluster) holding the only things a user sets; kustomize
`replacements` copy each value into the fields that use it. Why this and not placeholders: the
values sit in one short file, the manifests stay valid as generated (the tests validate them with
the defaults in place), and `kubectl apply -k` needs no tool beyond kubectl.
"""

from __future__ import annotations

import textwrap

from . import GENERATED_NOTE, ROUTER_METRICS_PORT, ROUTER_PACKAGE, ROUTER_PORT, ROUTER_VERSION, Facts, dump

K8S_VERSION = "1.37"  # the Kubernetes API version the tests validate against (kubernetes-validate)
LWS_API = "leaderworkerset.x-k8s.io/v1"
SHM_SIZE = "16Gi"  # /dev/shm for NCCL and vLLM's shared-memory queues between TP workers (memory-backed)
STORAGE_SIZE = "400Gi"  # the 172 GB checkpoint, its download staging, FlashInfer/torch compile caches
STORAGE_CLASS = "set-me-rwx"  # deliberately not a real class: the PVC stays Pending until it is set
HF_TOKEN_SECRET = "hf-token"
# A cold start downloads 172 GB and JIT-compiles FlashInfer kernels (a fresh B300 was seen taking
# ~69 min to healthy): the startup probe allows two hours before the kubelet gives up.
STARTUP_PERIOD_S, STARTUP_FAILURES = 30, 240
READY_PROBE = ["dsv4-serve", "--ready"]       # /v1/models lists the model AND a 1-token completion works
LIVE_PROBE = ["dsv4-serve", "--healthcheck"]  # GET /health
NCCL_P2P_REASON = ("NCCL_P2P_DISABLE: \"1\" when the first all-reduce hangs: PCIe peer-to-peer behind an IOMMU/ACS "
                   "does not work on some RTX PRO 6000 boards (rtx6kpro#15). Custom all-reduce, which crashes at "
                   "CUDA-graph capture on 2-GPU sm_12x (vllm#47751), is already off in this image's serve defaults.")


def _labels(f: Facts, component: str) -> dict:
    return {"app.kubernetes.io/name": f.project, "app.kubernetes.io/instance": f.name,
            "app.kubernetes.io/component": component}


def _selector(f: Facts, component: str) -> dict:
    return {"app.kubernetes.io/instance": f.name, "app.kubernetes.io/component": component}


def _pod_security() -> dict:
    # Any UID (OpenShift assigns one; elsewhere the image's USER applies), always group 0: the image's
    # home and caches are group-0 writable, and fsGroup 0 makes the cache volume so.
    return {"runAsNonRoot": True, "runAsGroup": 0, "fsGroup": 0, "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> dict:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


def _serve_env(f: Facts) -> list[dict]:
    env = [{"name": "MODEL", "value": f.model},
           {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": HF_TOKEN_SECRET, "key": "HF_TOKEN", "optional": True}}}]
    if f.pcie_only:
        env.append({"name": "NCCL_P2P_DISABLE", "value": "0"})
    return env


def _probe(command: list[str], period: int, timeout: int, failures: int) -> dict:
    return {"exec": {"command": command}, "periodSeconds": period, "timeoutSeconds": timeout, "failureThreshold": failures}


def _serve_container(f: Facts, args: list[str], probes: bool) -> dict:
    c = {"name": "serve", "image": f.image, "command": ["dsv4-serve"]}
    if args:
        c["args"] = args
    c.update({"env": _serve_env(f), "ports": [{"name": "http", "containerPort": f.port}],
              "resources": {"limits": {"nvidia.com/gpu": f.tensor_parallel_size}}})
    if probes:
        c["startupProbe"] = _probe(READY_PROBE, STARTUP_PERIOD_S, 60, STARTUP_FAILURES)
        c["readinessProbe"] = _probe(READY_PROBE, 30, 60, 3)
        c["livenessProbe"] = _probe(LIVE_PROBE, 30, 10, 5)
    c["securityContext"] = _container_security()
    c["volumeMounts"] = [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "cache", "mountPath": f.cache_root}]
    return c


def _pod_spec(f: Facts, args: list[str], probes: bool) -> dict:
    return {"securityContext": _pod_security(), "terminationGracePeriodSeconds": 60,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [_serve_container(f, args, probes)],
            "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
                        {"name": "cache", "persistentVolumeClaim": {"claimName": f"{f.name}-cache"}}]}


def cache_claim(f: Facts) -> dict:
    # ReadWriteMany: every replica (and every node of a multi-node group) mounts the same caches.
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"{f.name}-cache", "labels": _labels(f, "cache")},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                     "resources": {"requests": {"storage": STORAGE_SIZE}}}}


def service(f: Facts) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f.name, "labels": _labels(f, "server")},
            "spec": {"selector": _selector(f, "server"),
                     "ports": [{"name": "http", "port": f.port, "targetPort": "http", "protocol": "TCP"}]}}


def deployment(f: Facts) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f.name, "labels": _labels(f, "server")},
            "spec": {"replicas": 1, "selector": {"matchLabels": _selector(f, "server")},
                     # replace one replica at a time without asking for extra GPUs
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                     "template": {"metadata": {"labels": _labels(f, "server")}, "spec": _pod_spec(f, [], probes=True)}}}


def multi_node_args(headless: bool) -> list[str]:
    """vLLM 0.33's own multi-node launch (vllm/engine/arg_utils.py, docs/deployment/frameworks/lws.md):
    the target's TP inside each node, pipeline stages across the LWS group's nodes; the leader (rank 0)
    serves the API, the other ranks run --headless. Kubernetes expands $(VAR) from the LWS env."""
    args = ["--pipeline-parallel-size", "$(LWS_GROUP_SIZE)", "--nnodes", "$(LWS_GROUP_SIZE)",
            "--node-rank", "$(LWS_WORKER_INDEX)", "--master-addr", "$(LWS_LEADER_ADDRESS)"]
    return args + (["--headless"] if headless else [])


def leader_worker_set(f: Facts) -> dict:
    def template(component: str, headless: bool) -> dict:
        return {"metadata": {"labels": _labels(f, component)},
                "spec": _pod_spec(f, multi_node_args(headless), probes=not headless)}
    return {"apiVersion": LWS_API, "kind": "LeaderWorkerSet", "metadata": {"name": f.name, "labels": _labels(f, "server")},
            "spec": {"replicas": 1, "startupPolicy": "LeaderCreated",
                     "rolloutStrategy": {"type": "RollingUpdate",
                                         "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0}},
                     "leaderWorkerTemplate": {"size": 2, "restartPolicy": "RecreateGroupOnPodRestart",
                                              "leaderTemplate": template("server", headless=False),
                                              "workerTemplate": template("worker", headless=True)}}}


def router_args(f: Facts) -> list[str]:
    """vllm-router 0.1.17 finds the serving pods itself (Kubernetes service discovery by label)."""
    selector = [f"{k}={v}" for k, v in _selector(f, "server").items()]
    return ["--host", "0.0.0.0", "--port", str(ROUTER_PORT),
            "--service-discovery", "--selector", *selector, "--service-discovery-port", str(f.port),
            "--service-discovery-namespace", "$(POD_NAMESPACE)",
            "--policy", "cache_aware", "--health-check-interval-secs", "10",
            "--prometheus-host", "0.0.0.0", "--prometheus-port", str(ROUTER_METRICS_PORT)]


def router(f: Facts) -> list[dict]:
    name, labels = f"{f.name}-router", _labels(f, "router")
    meta = {"name": name, "labels": labels}
    container = {
        "name": "router", "image": f.router_image, "command": ["vllm-router"], "args": router_args(f),
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [{"name": "http", "containerPort": ROUTER_PORT}, {"name": "metrics", "containerPort": ROUTER_METRICS_PORT}],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
        # /liveness: the router answers; /readiness: 503 while no serving pod is healthy. (Its /health
        # turns 503 when ANY worker is unhealthy, so it would restart the router for a replica's fault.)
        "livenessProbe": {"httpGet": {"path": "/liveness", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readiness", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3},
        "securityContext": _container_security()}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": 1, "selector": {"matchLabels": _selector(f, "router")},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"serviceAccountName": name, "securityContext": _pod_security(),
                                        "containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"selector": _selector(f, "router"),
                  "ports": [{"name": "http", "port": ROUTER_PORT, "targetPort": "http", "protocol": "TCP"},
                            {"name": "metrics", "port": ROUTER_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}]}},
    ]


# ---- values and the replacements that apply them ---------------------------------------------

def values(f: Facts, multi_node: bool) -> list[tuple[str, object, str]]:
    """(key, default, what it is) for every value a user sets."""
    out = [("image", f.image, "the serving image: your registry/owner and tag (or @sha256 digest)"),
           ("routerImage", f.router_image, f"an image with vllm-router ({ROUTER_PACKAGE}=={ROUTER_VERSION}) on PATH"),
           ("model", f.model, "the checkpoint (Hugging Face repo id or a path inside the container)"),
           ("hfTokenSecret", HF_TOKEN_SECRET, "a Secret with key HF_TOKEN (optional: public models need none)"),
           ("storageClass", STORAGE_CLASS, "a ReadWriteMany storage class for the shared cache volume"),
           ("storageSize", STORAGE_SIZE, "the cache volume's size"),
           ("replicas", 1, "serving groups" if multi_node else "serving replicas (each takes "
                                                              f"{f.tensor_parallel_size} GPUs on one node)")]
    if multi_node:
        out.append(("nodes", 2, f"nodes per group, {f.tensor_parallel_size} GPUs each (pipeline stages)"))
    if f.pcie_only:
        out.append(("ncclP2PDisable", "0", NCCL_P2P_REASON))
    return out


def _serve_paths(multi_node: bool) -> list[tuple[str, str]]:
    if multi_node:
        return [("LeaderWorkerSet", f"spec.leaderWorkerTemplate.{t}.spec.containers.[name=serve]")
                for t in ("leaderTemplate", "workerTemplate")]
    return [("Deployment", "spec.template.spec.containers.[name=serve]")]


def replacements(f: Facts, multi_node: bool) -> list[dict]:
    serve = _serve_paths(multi_node)
    server_kind = serve[0][0]
    targets = {
        "image": [(kind, f.name, f"{c}.image") for kind, c in serve],
        "routerImage": [("Deployment", f"{f.name}-router", "spec.template.spec.containers.[name=router].image")],
        "model": [(kind, f.name, f"{c}.env.[name=MODEL].value") for kind, c in serve],
        "hfTokenSecret": [(kind, f.name, f"{c}.env.[name=HF_TOKEN].valueFrom.secretKeyRef.name") for kind, c in serve],
        "storageClass": [("PersistentVolumeClaim", f"{f.name}-cache", "spec.storageClassName")],
        "storageSize": [("PersistentVolumeClaim", f"{f.name}-cache", "spec.resources.requests.storage")],
        "replicas": [(server_kind, f.name, "spec.replicas")],
        "nodes": [("LeaderWorkerSet", f.name, "spec.leaderWorkerTemplate.size")],
        "ncclP2PDisable": [(kind, f.name, f"{c}.env.[name=NCCL_P2P_DISABLE].value") for kind, c in serve],
    }
    out = []
    for key, _, _ in values(f, multi_node):
        by_object: dict[tuple[str, str], list[str]] = {}
        for kind, name, path in targets[key]:
            by_object.setdefault((kind, name), []).append(path)
        out.append({"source": {"kind": "Values", "name": "values", "fieldPath": key},
                    "targets": [{"select": {"kind": kind, "name": name}, "fieldPaths": paths}
                                for (kind, name), paths in by_object.items()]})
    return out


def values_file(f: Facts, multi_node: bool) -> str:
    import yaml
    lines = [f"# {GENERATED_NOTE}",
             "# The values you set for this deployment; `kubectl apply -k` copies each into the manifests.",
             "# This object is local to kustomize (config.kubernetes.io/local-config) and never reaches the cluster.",
             "apiVersion: dsv4-flash.local/v1", "kind: Values", "metadata:", "  name: values", "  annotations:",
             '    config.kubernetes.io/local-config: "true"']
    for key, default, what in values(f, multi_node):
        lines += [f"# {line}" for line in textwrap.wrap(what, 100)]
        lines.append(yaml.safe_dump({key: default}, width=1000).rstrip())
    return "\n".join(lines) + "\n"


def kustomization(f: Facts, multi_node: bool, resources: list[str]) -> str:
    flavour = "multi-node" if multi_node else "single-node"
    how = (f"""One LeaderWorkerSet group per replica: `nodes` pods, each with {f.tensor_parallel_size} GPUs; vLLM runs
TP {f.tensor_parallel_size} inside a node and one pipeline stage per node (--nnodes/--node-rank/--master-addr,
--headless on the workers). Needs the LeaderWorkerSet controller (leaderworkerset.x-k8s.io/v1)."""
           if multi_node else
           f"""A Deployment of `replicas` pods, each {f.tensor_parallel_size} GPUs on one node (TP {f.tensor_parallel_size}).""")
    header = f"""dsv4-flash {f.target} ({f.description}), {flavour}.
{how}
vllm-router in front finds the serving pods by label (Kubernetes service discovery).
Deploy: edit values.yaml and the namespace below, then
  kubectl create namespace dsv4-flash
  kubectl -n dsv4-flash create secret generic hf-token --from-literal=HF_TOKEN=hf_...   # only for gated models
  kubectl apply -k deploy/k8s/{f.target}/{flavour}
  kubectl -n dsv4-flash port-forward svc/{f.name}-router {ROUTER_PORT}:{ROUTER_PORT}
Needs kubectl >= 1.27 (kustomize v5 replacements)."""
    doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
           "namespace": "dsv4-flash", "resources": ["values.yaml", *resources],
           "replacements": replacements(f, multi_node)}
    return dump([doc], header)


def files(f: Facts) -> dict[str, str]:
    out = {}
    for multi_node in (False, True):
        base = f"deploy/k8s/{f.target}/{'multi-node' if multi_node else 'single-node'}"
        server = [leader_worker_set(f) if multi_node else deployment(f), service(f)]
        out[f"{base}/values.yaml"] = values_file(f, multi_node)
        out[f"{base}/cache.yaml"] = dump([cache_claim(f)], "The cache volume: Hugging Face, vLLM and FlashInfer caches.")
        out[f"{base}/server.yaml"] = dump(server, "The serving pods and their Service.")
        out[f"{base}/router.yaml"] = dump(router(f), "vllm-router, its service account and the Role that lets it watch pods.")
        out[f"{base}/kustomization.yaml"] = kustomization(f, multi_node, ["cache.yaml", "server.yaml", "router.yaml"])
    return out
