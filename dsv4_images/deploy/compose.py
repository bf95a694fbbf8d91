"""Compose files: N replicas of one target's image behind vllm-router, deploy/compose/<target>.yaml.

Works with docker-compose 1.29 (Debian) and Compose v2 (`docker compose`): no `version:` key
(the Compose Specification), `${VAR:-default}` values, GPUs by `device_ids` per replica.
What a user sets comes from the environment or an `.env` file beside the command.
"""

from __future__ import annotations

from . import ROUTER_METRICS_PORT, ROUTER_PORT, Facts, dump

REPLICAS = 2
# The image's own health check says /health; Compose's says more: the model is listed and answers.
# Compose has one check for both jobs, and its only effect is the router's depends_on gate (nothing
# restarts an unhealthy container), so it is tolerant: 5 misses in a row (over a minute of a replica
# not answering) make a replica unhealthy, not 3 probes slowed by a busy host. A CI run once saw
# `docker-compose up` fail on "Container ... is unhealthy" with 3.
HEALTHCHECK = {"test": ["CMD", "dsv4-serve", "--ready"], "interval": "15s", "timeout": "60s", "retries": 5}
START_PERIOD = {"cuda": "7200s", "cpu": "600s"}  # cold GPU starts download 172 GB and JIT-compile kernels
CPU_SHM = "1g"


def _serve(f: Facts, index: int) -> dict:
    env = {"MODEL": f"${{MODEL:-{f.model}}}"}
    if f.is_cuda:
        env["HF_TOKEN"] = None  # passed through from the environment when set, never written here
    if f.pcie_only:
        # "1" when the first all-reduce hangs (PCIe P2P behind IOMMU/ACS, rtx6kpro#15); custom
        # all-reduce (crash at graph capture on 2-GPU sm_12x, vllm#47751) is already off by default.
        env["NCCL_P2P_DISABLE"] = "${NCCL_P2P_DISABLE:-0}"
    svc = {"image": f"${{DSV4_IMAGE:-{f.image}}}", "entrypoint": ["dsv4-serve"], "environment": env,
           "volumes": [f"${{DSV4_CACHE:-dsv4-{f.target}-cache}}:{f.cache_root}"], "expose": [str(f.port)],
           "healthcheck": {**HEALTHCHECK, "start_period": START_PERIOD[f.kind]}, "restart": "unless-stopped"}
    if f.is_cuda:
        tp = f.tensor_parallel_size
        gpus = [str(i) for i in range(index * tp, (index + 1) * tp)]
        svc.update({"ipc": "host", "ulimits": {"memlock": -1, "stack": 67108864},
                    "deploy": {"resources": {"reservations": {"devices": [
                        {"driver": "nvidia", "device_ids": gpus, "capabilities": ["gpu"]}]}}}})
    else:
        svc["shm_size"] = CPU_SHM
    return svc


def router_command(f: Facts, replicas: int) -> list[str]:
    urls = [f"http://serve-{i}:{f.port}" for i in range(replicas)]
    return ["--host", "0.0.0.0", "--port", str(ROUTER_PORT), "--worker-urls", *urls,
            "--policy", "round_robin", "--health-check-interval-secs", "10",
            "--prometheus-host", "0.0.0.0", "--prometheus-port", str(ROUTER_METRICS_PORT)]


def compose(f: Facts, replicas: int = REPLICAS) -> dict:
    services = {f"serve-{i}": _serve(f, i) for i in range(replicas)}
    services["router"] = {
        "image": f"${{ROUTER_IMAGE:-{f.router_image}}}", "entrypoint": ["vllm-router"],
        "command": router_command(f, replicas),
        "ports": [f"${{ROUTER_PORT:-{ROUTER_PORT}}}:{ROUTER_PORT}", f"${{ROUTER_METRICS_PORT:-{ROUTER_METRICS_PORT}}}:{ROUTER_METRICS_PORT}"],
        "depends_on": {f"serve-{i}": {"condition": "service_healthy"} for i in range(replicas)},
        "healthcheck": {"test": ["CMD", "python3", "-c", "import urllib.request as u; "
                                 f"u.urlopen('http://127.0.0.1:{ROUTER_PORT}/readiness', timeout=5)"],
                        "interval": "10s", "timeout": "6s", "retries": 3},
        "restart": "unless-stopped"}
    return {"services": services, "volumes": {f"dsv4-{f.target}-cache": {}}}


def files(f: Facts) -> dict[str, str]:
    gpus = (f", GPUs {', '.join(f'{i * f.tensor_parallel_size}-{(i + 1) * f.tensor_parallel_size - 1}' for i in range(REPLICAS))}"
            if f.is_cuda else "")
    header = f"""dsv4-flash {f.target} ({f.description}): {REPLICAS} replicas{gpus}, vllm-router in front.
  docker-compose -f deploy/compose/{f.target}.yaml up -d      # or: docker compose -f ... up -d
  curl http://127.0.0.1:{ROUTER_PORT}/v1/models
Values (environment or .env): DSV4_IMAGE (owner/tag), ROUTER_IMAGE (default: the same image, which carries vllm-router),
MODEL, {'HF_TOKEN (gated models), ' if f.is_cuda else ''}DSV4_CACHE (a volume name or host directory for the caches),
ROUTER_PORT, ROUTER_METRICS_PORT{', NCCL_P2P_DISABLE (1 if the first all-reduce hangs: PCIe P2P behind IOMMU)' if f.pcie_only else ''}.
The router retries a request that fails before any byte reached the client on another replica; a
stream cut mid-way by a dying replica is not retried."""
    return {f"deploy/compose/{f.target}.yaml": dump([compose(f)], header)}
