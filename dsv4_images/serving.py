"""An image's vLLM server as a container (testcontainers), waited on until it serves.

The wait is testcontainers' own HTTP wait strategy on GET /health, with one addition: it gives up at
once when the container has exited (vLLM died while starting) instead of polling until the timeout.
Used by `build.py demo` and by the integration tests."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

# testcontainers' reaper (Ryuk) is an image that cannot be pulled where no registry is reachable;
# every container started here is removed by its owner instead (`stop`, or the `serve` context).
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.wait_strategies import HttpWaitStrategy  # noqa: E402

from .errors import UserError  # noqa: E402
from .verify import client  # noqa: E402

PORT = 8000


class _Exited(Exception):
    pass


class ServingWait(HttpWaitStrategy):
    """GET /health answers 200, or the container has exited (an error naming its last log lines)."""

    def __init__(self, port: int = PORT, timeout: float = 900):
        super().__init__(port, "/health")
        self.with_startup_timeout(int(timeout)).with_poll_interval(1)
        self._target = None

    def wait_until_ready(self, container) -> None:
        self._target = container
        super().wait_until_ready(container)

    def _build_url(self, container) -> str:
        host, port = address(container)
        return f"http://{host}:{port}/health"

    def _try_http_request(self, url, headers, ssl_context) -> bool:
        wrapped = self._target.get_wrapped_container()
        wrapped.reload()
        if wrapped.status not in ("created", "running"):
            raise _Exited(wrapped.status)
        return super()._try_http_request(url, headers, ssl_context)


def address(c: DockerContainer) -> tuple[str, int]:
    """Where the host reaches the server: the address it was bound to, else where testcontainers says
    (which may be Docker's gateway, 172.17.0.1, a port bound to 127.0.0.1 does not answer there)."""
    bound = c.ports.get(str(PORT))
    if isinstance(bound, tuple):
        return bound[0], int(bound[1])
    return c.get_container_host_ip(), int(c.get_exposed_port(PORT))


class Server:
    """A running container of an image, reachable at .url, healthy since .start_to_healthy_s."""

    def __init__(self, container: DockerContainer, url: str, start_to_healthy_s: float):
        self.container, self.url, self.start_to_healthy_s = container, url, start_to_healthy_s
        self._model: str | None = None

    @property
    def model(self) -> str:
        """The served model's id (asked once; a server started with an API key needs it, so ask lazily)."""
        if self._model is None:
            self._model = client.served_model(self.url)
        return self._model

    @property
    def docker(self):
        return self.container.get_wrapped_container()

    def logs(self) -> str:
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")


def container(image: str, env: dict | None = None, volumes: list[tuple[str, str]] | None = None,
              args: list[str] | None = None, shm_size: str | None = "1g", host_port=None,
              **docker_kwargs) -> DockerContainer:
    """The container, not started; volumes are mounted read-only. `host_port`: a port or (ip, port);
    `docker_kwargs` go to docker-py's create (device_requests, ipc_mode, ulimits, user, ...)."""
    c = DockerContainer(image).with_kwargs(**({"shm_size": shm_size} if shm_size else {}), **docker_kwargs)
    if host_port is None:
        c = c.with_exposed_ports(PORT)
    elif isinstance(host_port, tuple):  # docker-py binds (address, port); testcontainers' with_bind_ports takes a port only
        c.ports[str(PORT)] = host_port
    else:
        c = c.with_bind_ports(PORT, host_port)
    for key, value in (env or {}).items():
        c = c.with_env(key, value)
    for host, inside in volumes or []:
        c = c.with_volume_mapping(host, inside, "ro")
    return c.with_command(args) if args else c


def _last_lines(c: DockerContainer, n: int = 3) -> str:
    try:
        out, err = c.get_logs()
    except Exception:  # noqa: BLE001 - the container may be gone already
        return ""
    return ": " + " | ".join((out + err).decode(errors="replace").strip().splitlines()[-n:])


def start(c: DockerContainer, timeout: float = 900) -> Server:
    """Start `c` and wait until it serves; one clear error when it exits or times out (the container is removed)."""
    started = time.monotonic()
    c.waiting_for(ServingWait(PORT, timeout))
    try:
        c.start()
    except _Exited as exc:
        message = f"the server exited ({exc}) before it became healthy{_last_lines(c)}"
    except TimeoutError:
        message = f"{c.image} not healthy after {timeout:.0f}s{_last_lines(c)}"
    else:
        url = "http://{}:{}".format(*address(c))
        return Server(c, url, time.monotonic() - started)
    stop(c)
    raise UserError(message)


def stop(c: DockerContainer) -> None:
    try:
        c.stop()
    except Exception:  # noqa: BLE001 - already stopped or removed (the SIGTERM test stops it itself)
        pass


@contextmanager
def serve(image: str, env: dict | None = None, volumes: list[tuple[str, str]] | None = None,
          args: list[str] | None = None, timeout: float = 900) -> Iterator[Server]:
    server = start(container(image, env, volumes, args), timeout)
    try:
        yield server
    finally:
        stop(server.container)
