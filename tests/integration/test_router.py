"""Two cpu replicas behind the real vllm-router (issue 12 part 4), from the generated Compose file
(deploy/compose/cpu.yaml) run by the real docker-compose: requests reach both replicas, MTP fires on
both, nothing is corrupted through the router or on either replica, and a replica killed mid-run
loses no request the router could retry. The router is the hash-locked vllm-router binary the image
carries; nothing here stands in for it."""

from __future__ import annotations

import http.client
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dsv4_images import REPO_ROOT

from ..conftest import need

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]
COMPOSE_FILE = REPO_ROOT / "deploy" / "compose" / "cpu.yaml"
REPLICAS = ("serve-0", "serve-1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, image: str, workdir):
        self.project = f"dsv4router{random.randrange(1 << 24):x}"
        self.port, self.metrics_port = _free_port(), _free_port()
        self.override = workdir / "publish-replicas.yaml"  # test-only: reach each replica from the host
        self.override.write_text("services:\n" + "".join(
            f"  {name}:\n    ports: ['127.0.0.1::8000']\n" for name in REPLICAS))
        self.env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "DSV4_IMAGE": image, "ROUTER_IMAGE": image,
                    "ROUTER_PORT": str(self.port), "ROUTER_METRICS_PORT": str(self.metrics_port)}

    def compose(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        return subprocess.run(["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), "-f", str(self.override),
                               *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def diagnosis(self) -> str:
        """Why the stack did not come up: each replica's state (health log, OOM kill, restarts) and log tail."""
        parts = []
        for name in REPLICAS:
            ids = self.compose("ps", "-q", name).stdout.split()
            for cid in ids:
                state = subprocess.run(["docker", "inspect", "--format", "{{json .State}} restarts={{.RestartCount}}", cid],
                                       capture_output=True, text=True).stdout.strip()
                logs = subprocess.run(["docker", "logs", "--tail", "15", cid], capture_output=True, text=True)
                parts.append(f"--- {name} {cid[:12]}: {state[-2500:]}\n{(logs.stdout + logs.stderr)[-2500:]}")
        return "\n".join(parts)

    def replica_url(self, name: str) -> str:
        out = self.compose("port", name, "8000").stdout.strip()
        return f"http://127.0.0.1:{out.rsplit(':', 1)[1]}"

    def routed(self) -> dict[str, float]:
        """Requests the router says each worker processed (its own Prometheus port)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("vllm_router_processed_requests") and "worker" in sample.labels:
                    worker = sample.labels["worker"].split("//", 1)[-1].split(":", 1)[0]
                    out[worker] = out.get(worker, 0.0) + sample.value
        return out


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readiness", timeout=5) as r:
            return json.load(r).get("healthy_workers", 0) >= 2 if r.status == 200 else False
    except (OSError, ValueError):
        return False


def _complete(url: str, prompt: str, stream: bool = False, max_tokens: int = 24) -> tuple[bool, str]:
    body = json.dumps({"model": "tiny-mtp", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": stream}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as r:
            raw = r.read().decode()
        return (("[DONE]" in raw) if stream else bool(json.loads(raw)["choices"][0]["text"])), raw[:200]
    except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:  # IncompleteRead: a stream cut
        return False, f"{type(exc).__name__}: {exc}"


def _verify(url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "verify", "--url", url, "--workload", "reasoning",
                           "--concurrency", "1,2", "--max-tokens", "16", *extra], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=1800)


@pytest.fixture(scope="module")
def stack(cpu_image, tmp_path_factory, report):
    need(shutil.which("docker-compose") is not None, "docker-compose is not installed (./dev setup installs it)")
    s = Stack(cpu_image[0], tmp_path_factory.mktemp("router"))
    started = time.monotonic()
    up = s.compose("up", "-d")
    try:
        assert up.returncode == 0, up.stderr[-1500:] + "\n" + s.diagnosis()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not _ready(s.url):
            time.sleep(2)
        assert _ready(s.url), s.compose("logs", "--tail", "20").stdout[-3000:] + "\n" + s.diagnosis()
        report["router"] = {"up_to_router_ready_s": round(time.monotonic() - started, 1)}
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", timeout=300)


def test_requests_through_the_router_reach_both_replicas(stack, report):
    before = stack.routed()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: _complete(stack.url, f"def f{i}(x):"), range(20)))
    assert all(ok for ok, _ in results), [r for ok, r in results if not ok]
    after = stack.routed()
    split = {w: after.get(w, 0) - before.get(w, 0) for w in REPLICAS}
    report["router"]["split_of_20"] = split
    assert sum(split.values()) == 20 and all(n >= 5 for n in split.values()), split  # round_robin


def test_verify_passes_through_the_router_and_on_each_replica(stack, tmp_path, report):
    replicas = [stack.replica_url(name) for name in REPLICAS]
    metrics = [a for url in replicas for a in ("--metrics-url", url)]
    results = {"router": _verify(stack.url, *metrics, "--json", str(tmp_path / "router.json"))}
    for name, url in zip(REPLICAS, replicas):
        results[name] = _verify(url, "--json", str(tmp_path / f"{name}.json"))
    figures = {}
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stdout[-3000:], result.stderr[-1000:])
        data = json.loads((tmp_path / f"{name}.json").read_text())
        acceptance = data["acceptance_by_workload"]["reasoning"]
        corrupted = sum(p["classes"]["corrupted"] for p in data["phases"])
        assert acceptance["acceptance_rate"] and acceptance["acceptance_rate"] > 0.5 and corrupted == 0, (name, data)
        figures[name] = {"acceptance": round(acceptance["acceptance_rate"], 3), "corrupted": corrupted,
                         "requests": sum(p["requests"] for p in data["phases"])}
    report["router"]["verify"] = figures


def test_a_replica_killed_mid_run_loses_no_request_the_router_could_retry(stack, report):
    """Non-streamed requests in flight on the dying replica are retried by the router on the other one;
    a stream that already sent bytes cannot be retried (reported, not asserted)."""
    plain: list[tuple[bool, str]] = []
    streams: list[tuple[bool, str]] = []

    def traffic():
        with ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(_complete, stack.url, f"class C{i}:", i % 4 == 0, 192) for i in range(24)]
            for i, job in enumerate(jobs):
                (streams if i % 4 == 0 else plain).append(job.result())

    worker = threading.Thread(target=traffic)
    worker.start()
    time.sleep(3)
    killed = stack.compose("kill", "serve-1")
    worker.join(timeout=900)
    assert killed.returncode == 0, killed.stderr
    assert not worker.is_alive() and len(plain) + len(streams) == 24, (len(plain), len(streams))
    lost = [r for ok, r in plain if not ok]
    report["router"]["kill"] = {"non_streamed": len(plain), "non_streamed_lost": len(lost),
                                "streams": len(streams), "streams_cut": sum(1 for ok, _ in streams if not ok)}
    assert lost == [], lost
    after = [_complete(stack.url, f"def after{i}():") for i in range(6)]
    assert all(ok for ok, _ in after), after  # new requests go to the survivor
