"""Images and servers the integration tests share: each built or started once per session (a vLLM start
costs a minute or more on two cores)."""

import pytest

from .cpu_server import build_cpu_image, serve


@pytest.fixture(scope="session")
def cpu_image(docker_client, report):
    return build_cpu_image(docker_client, unpatched=False, report=report)


@pytest.fixture(scope="session")
def unpatched_image(docker_client, report):
    return build_cpu_image(docker_client, unpatched=True, report=report)


@pytest.fixture(scope="session")
def mtp_server(cpu_image, report):
    """The patched cpu image served with its defaults (MTP k=2): shared by every module that only talks to it."""
    with serve(cpu_image[0]) as server:
        report["start_to_healthy_s"] = round(server.start_to_healthy_s, 1)
        yield server
