"""Images and servers the integration tests share: each built or started once per session (a vLLM start
costs a minute or more on two cores)."""

import random

import pytest

from dsv4_images.serving import container, start, stop

from .cpu_server import build_cpu_image


@pytest.fixture(scope="session")
def cpu_image(docker_client, report):
    return build_cpu_image(docker_client, unpatched=False, report=report)


@pytest.fixture(scope="session")
def unpatched_image(docker_client, report):
    return build_cpu_image(docker_client, unpatched=True, report=report)


@pytest.fixture(scope="session")
def cache_volume(docker_client):
    """A named volume at $HOME/.cache: the MTP server fills it, test_operate's second UID reuses it."""
    volume = docker_client.volumes.create(f"dsv4-test-cache-{random.randrange(1 << 30)}")
    yield volume.name
    volume.remove(force=True)


@pytest.fixture(scope="session")
def mtp_server(cpu_image, cache_volume, report):
    """The patched cpu image served with its defaults (MTP k=2), shared by every module that only talks to it.
    It runs as an arbitrary UID in group 0 (as OpenShift assigns one) with the cache volume, as users are
    told to run it; test_operate starts a second UID on the same volume while this one serves."""
    uid = random.randrange(10_000, 60_000)
    c = container(cpu_image[0], user=f"{uid}:0").with_volume_mapping(cache_volume, "/home/dsv4/.cache", "rw")
    server = start(c)
    try:
        report["start_to_healthy_s"] = round(server.start_to_healthy_s, 1)
        yield server
    finally:
        stop(server.container)
