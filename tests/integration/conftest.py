"""Images the integration tests share: built once per session (cached layers make a rebuild cheap)."""

import pytest

from .cpu_server import build_cpu_image


@pytest.fixture(scope="session")
def cpu_image(docker_client, report):
    return build_cpu_image(docker_client, unpatched=False, report=report)


@pytest.fixture(scope="session")
def unpatched_image(docker_client, report):
    return build_cpu_image(docker_client, unpatched=True, report=report)
