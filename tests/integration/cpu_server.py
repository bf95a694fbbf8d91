"""Building the cpu images once per session and running them with testcontainers."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from testcontainers.core.container import DockerContainer

from dsv4_images import images, matrix
from dsv4_images.verify import client, health

TEST_IMAGE = "dsv4-flash-test"


def build_cpu_image(docker_client, unpatched: bool, report: dict) -> tuple[str, dict]:
    """Build (or, with $DSV4_TEST_IMAGE[_UNPATCHED] set, reuse) the cpu image; returns (tag, plan labels)."""
    m = matrix.load()
    target = m.resolve("cpu")
    tag = "cpu-unpatched" if unpatched else "cpu"
    plan = images.plan(m, target, image=TEST_IMAGE, tags=[tag], unpatched=unpatched)
    reuse = os.environ.get("DSV4_TEST_IMAGE_UNPATCHED" if unpatched else "DSV4_TEST_IMAGE")
    if reuse:
        return reuse, plan.labels
    started = time.monotonic()
    lines: list[str] = []
    result = images.execute(docker_client, m, plan, emit=lines.append)
    key = "build_unpatched" if unpatched else "build"
    report[key] = {"seconds": round(time.monotonic() - started, 1), "steps": result.steps,
                   "cached_steps": result.cached_steps,
                   "image_size_bytes": docker_client.images.get(plan.tags[0]).attrs["Size"]}
    return plan.tags[0], plan.labels


class Server:
    """A running container of an image, reachable at .url once healthy."""

    def __init__(self, container: DockerContainer, url: str, start_to_healthy_s: float):
        self.container = container
        self.url = url
        self.start_to_healthy_s = start_to_healthy_s
        self.model = client.served_model(url)

    @property
    def docker(self):
        return self.container.get_wrapped_container()

    def logs(self) -> str:
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")


def container_for(image: str, env: dict | None = None, volumes: list[tuple[str, str]] | None = None,
                  args: list[str] | None = None) -> DockerContainer:
    c = DockerContainer(image).with_exposed_ports(8000).with_kwargs(shm_size="1g")
    for key, value in (env or {}).items():
        c = c.with_env(key, value)
    for host, inside in volumes or []:
        c = c.with_volume_mapping(host, inside, "ro")
    if args:
        c = c.with_command(args)
    return c


@contextmanager
def serve(image: str, env: dict | None = None, volumes: list[tuple[str, str]] | None = None, timeout: float = 900):
    c = container_for(image, env, volumes)
    started = time.monotonic()
    c.start()
    try:
        url = f"http://{c.get_container_host_ip()}:{c.get_exposed_port(8000)}"

        def running() -> bool:
            c.get_wrapped_container().reload()
            return c.get_wrapped_container().status == "running"

        def last_lines() -> str:
            out, err = c.get_logs()
            return ": " + " | ".join((out + err).decode(errors="replace").strip().splitlines()[-3:])

        health.wait_healthy(url, running, timeout, describe_failure=last_lines)
        yield Server(c, url, time.monotonic() - started)
    finally:
        try:
            c.stop()
        except Exception:  # already stopped by a test (SIGTERM test)
            pass


def model_dir_for_mounting(path: Path) -> Path:
    """Bind mounts must be readable by the container's uid 2000."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path
