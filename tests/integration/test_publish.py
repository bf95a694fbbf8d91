"""Publishing for real: push the cpu image to a local registry with build.py, pull it back by
digest, and prove the build reproduces bit for bit; and the failure cases give one clear line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

import pytest
from docker import errors as docker_errors

from dsv4_images import REPO_ROOT, base, matrix, plan, provenance, publish, repro, reproducible
from dsv4_images.errors import UserError

from ..conftest import need
from .registry import available, free_port, registry

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]
TARGET = matrix.load().resolve("cpu")


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory, docker_client):
    need(available(), "Debian's docker-registry is not installed (./dev setup installs it)")
    root = tmp_path_factory.mktemp("registry")
    with registry(root) as address:
        yield address
    shutil.rmtree(root, ignore_errors=True)  # a few GB of blobs; pytest would keep three runs' worth


@pytest.fixture(scope="module")
def pushed(local_registry, docker_client, report):
    """`build.py --arch cpu --push --image 127.0.0.1:PORT/dsv4-flash`, as a user runs it."""
    image = f"{local_registry}/dsv4-flash"
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "--arch", "cpu", "--push", "--image", image],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    digests = dict(re.findall(r"^pushed (\S+) \((sha256:[0-9a-f]{64})\)$", result.stdout, re.M))
    config_digest = re.search(r"^reproducible: .* image (sha256:[0-9a-f]{64})$", result.stdout, re.M).group(1)
    seconds = {k: float(v) for k, v in re.findall(r"^timing: (\w+) ([\d.]+)s$", result.stdout, re.M)}
    report["push"] = {"total_s": round(time.monotonic() - started, 1), **seconds, "config_digest": config_digest,
                      "manifest_digest": next(iter(digests.values()))}
    yield {"image": image, "digests": digests, "config_digest": config_digest, "stdout": result.stdout}
    # The pushed image under the registry's name (tags, or the digest it was pulled back by) and the
    # rebuild have served their purpose; the cpu image the other tests use is tagged apart.
    for name in (image, "dsv4-flash-repro"):
        for leftover in docker_client.images.list(name=name):
            for ref in leftover.tags + leftover.attrs.get("RepoDigests", []):
                if ref.startswith(f"{name}:") or ref.startswith(f"{name}@"):
                    try:  # by reference, so an image that also carries other tags keeps them
                        docker_client.images.remove(ref)
                    except docker_errors.APIError:  # in use by a container: leave it
                        pass


def test_push_then_pull_back_by_digest_gives_the_same_image_and_labels(pushed, docker_client, report):
    build = plan.make(matrix.load(), TARGET, provenance.current(), image=pushed["image"])
    assert set(pushed["digests"]) == set(build.tags)
    assert len(set(pushed["digests"].values())) == 1  # every tag names the same manifest
    local = docker_client.images.get(build.tags[0])
    assert local.id == pushed["config_digest"]
    labels = local.labels
    for tag in build.tags:
        docker_client.images.remove(tag, force=True)
    digest = next(iter(pushed["digests"].values()))
    started = time.monotonic()
    pulled = docker_client.images.pull(f"{pushed['image']}@{digest}")
    report["push"]["pull_s"] = round(time.monotonic() - started, 1)
    assert pulled.id == pushed["config_digest"]
    assert pulled.labels == labels
    for key, value in build.labels.items():
        if key not in ("org.opencontainers.image.created",):
            assert pulled.labels[key] == value, key
    assert pulled.attrs["Created"].startswith(build.labels["org.opencontainers.image.created"][:19])


# Labels that record the build's inputs: if these differ, the rebuild did not start from the same inputs.
INPUT_LABELS = ("org.opencontainers.image.revision", "org.opencontainers.image.created", "org.opencontainers.image.version")


def test_a_no_cache_rebuild_reproduces_the_pushed_image_bit_for_bit(pushed, docker_client, report):
    """Two builds (the pushed one and a rebuild without the layer cache) give the same image."""
    m = matrix.load()
    started = time.monotonic()
    second, build_s = repro.build_and_scan(docker_client, m, TARGET, "cpu-rebuild", emit=lambda _: None)
    report["repro"] = {"rebuild_s": round(build_s, 1), "scan_and_build_s": round(time.monotonic() - started, 1),
                       "config_digest_first": pushed["config_digest"], "config_digest_second": second.config_digest}
    if second.config_digest != pushed["config_digest"]:
        # The pushed image is already normalized; normalizing it again (idempotent) indexes its files.
        ref = f"{pushed['image']}@{next(iter(pushed['digests'].values()))}"
        first = reproducible.normalize(docker_client, ref, provenance.current().epoch, base.base_epoch(TARGET), index=True)
        labels = [(first.config["config"]["Labels"].get(k), second.config["config"]["Labels"].get(k)) for k in INPUT_LABELS]
        changed = [f"{k}: {a} != {b}" for k, (a, b) in zip(INPUT_LABELS, labels) if a != b]
        assert not changed, f"the inputs changed between the push and the rebuild (work tree edited during the test?): {changed}"
        assert first.config_digest == pushed["config_digest"]
        comparison = repro.compare(first, second)
        report["repro"]["config_differences"] = comparison["config_differences"]
        report["repro"]["differences"] = [layer for layer in comparison["layers"] if not layer["match"]]
        pytest.fail(f"not reproducible: config {comparison['config_differences']}; layers {report['repro']['differences']}"[:3000])


@pytest.fixture(scope="module")
def small_image(docker_client):
    """An image to push that is surely here: the cpu target's base (the pinned Debian digest where a registry
    is reachable, as on GitHub's runners, else the dsv4-flash-base image bootstrapped from Debian's archive)."""
    return docker_client.images.get(base.ensure_base(docker_client, TARGET, emit=lambda _: None))


def test_a_registry_that_is_down_is_one_clear_error_after_bounded_retries(docker_client, small_image):
    ref = f"127.0.0.1:{free_port()}/dsv4-flash:down"
    small_image.tag(ref)
    lines: list[str] = []
    try:
        with pytest.raises(UserError) as exc:
            publish.push(docker_client, ref, emit=lines.append, attempts=3)
    finally:
        docker_client.images.remove(ref)
    assert str(exc.value).startswith(f"push of {ref} failed after 3 attempts: ")
    assert "\n" not in str(exc.value) and "connection refused" in str(exc.value).lower()
    assert len([line for line in lines if "retrying" in line]) == 2


def test_a_registry_that_refuses_the_push_is_one_clear_error(docker_client, small_image, tmp_path):
    need(available(), "Debian's docker-registry is not installed (./dev setup installs it)")
    with registry(tmp_path, read_only=True) as address:
        ref = f"{address}/dsv4-flash:refused"
        small_image.tag(ref)
        try:
            with pytest.raises(UserError) as exc:
                publish.push(docker_client, ref, emit=lambda _: None, attempts=2)
        finally:
            docker_client.images.remove(ref)
    assert str(exc.value).startswith(f"push of {ref} failed after 2 attempts: ")
    assert "\n" not in str(exc.value)
