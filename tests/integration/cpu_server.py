"""Building the cpu images once per session; running them is dsv4_images.serving (testcontainers)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dsv4_images import builder, matrix, plan, provenance
from dsv4_images.serving import Server, container, serve  # noqa: F401 - re-exported for the tests

TEST_IMAGE = "dsv4-flash-test"


def build_cpu_image(docker_client, unpatched: bool, report: dict) -> tuple[str, dict]:
    """Build (or, with $DSV4_TEST_IMAGE[_UNPATCHED] set, reuse) the cpu image; returns (tag, plan labels)."""
    m = matrix.load()
    target = m.resolve("cpu")
    tag = "cpu-unpatched" if unpatched else "cpu"
    build = plan.make(m, target, provenance.current(), image=TEST_IMAGE, tags=[tag], unpatched=unpatched)
    reuse = os.environ.get("DSV4_TEST_IMAGE_UNPATCHED" if unpatched else "DSV4_TEST_IMAGE")
    if reuse:
        return reuse, build.labels
    started = time.monotonic()
    lines: list[str] = []
    result = builder.execute(docker_client, m, build, emit=lines.append)
    key = "build_unpatched" if unpatched else "build"
    report[key] = {"seconds": round(time.monotonic() - started, 1), "steps": result.steps,
                   "cached_steps": result.cached_steps, "stages": result.stages,
                   "image_size_bytes": docker_client.images.get(build.tags[0]).attrs["Size"]}
    return build.tags[0], build.labels


def container_for(image: str, env: dict | None = None, volumes: list[tuple[str, str]] | None = None,
                  args: list[str] | None = None):
    return container(image, env, volumes, args)


def model_dir_for_mounting(path: Path) -> Path:
    """Bind mounts must be readable by the container's uid 2000."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path
