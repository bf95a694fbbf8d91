"""The cpu image's SBOM (issue 18): every wheel of locks/cpu.txt with its sha256 and every package of the image's
dpkg database, schema-valid; and an image with a locked wheel uninstalled fails `dsv4-images sbom` in one line
naming the wheel. The build itself already wrote reports/sbom-cpu.cdx.json (builder.execute); this makes its own
from the image, so it holds with $DSV4_TEST_IMAGE too."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest

from dsv4_images import REPO_ROOT, matrix, wheelhouse
from dsv4_images.attest import expect, sbom

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]

M = matrix.load()
CPU = M.resolve("cpu")
UNINSTALLED = "sniffio"  # small, pure Python, in locks/cpu.txt


@pytest.fixture(scope="module")
def locked():
    return expect.locked_files(CPU, "wheel")  # what the build resolved: the index picks each project's file


@pytest.fixture(scope="module")
def cpu_sbom(cpu_image, docker_client, locked, tmp_path_factory, report):
    tag = cpu_image[0]
    started = time.monotonic()
    build = expect.plan_for_image(docker_client, M, CPU, tag)
    path = sbom.generate(docker_client, M, build, tag, tmp_path_factory.mktemp("sbom"), locked=locked)
    doc = json.loads(path.read_text())
    report["sbom_cpu"] = {"seconds": round(time.monotonic() - started, 1), "bytes": path.stat().st_size,
                          "components": len(doc["components"]), "summary": sbom.summary(path)}
    return path, doc


def test_the_cpu_sbom_lists_every_locked_wheel_with_its_sha256_and_validates(cpu_sbom, locked):
    path, doc = cpu_sbom
    sbom.validate(path.read_text())
    hashes = {(c["name"], h["content"]) for c in doc["components"] for h in c.get("hashes", [])
              if c.get("purl", "").startswith("pkg:pypi/")}
    runtime = {r.name for r in wheelhouse.parse_lock((REPO_ROOT / "locks/cpu.txt").read_text(), "cpu.txt")}
    expected = {(f.project, f.sha256) for f in locked}
    assert {name for name, _ in expected} == runtime  # every project of the lock, one file each
    assert expected <= hashes, sorted(expected - hashes)[:5]


def test_the_cpu_sbom_lists_every_package_of_the_image_s_dpkg_database(cpu_sbom, cpu_image, docker_client):
    _, doc = cpu_sbom
    listed = docker_client.containers.run(cpu_image[0], ["dpkg-query", "-W", "-f", "${Package} ${Version} ${Architecture}\\n"],
                                          entrypoint=[], network_mode="none", remove=True).decode().splitlines()
    deb = {(c["name"], c["version"], next(p["value"] for p in c["properties"] if p["name"].endswith("architecture")))
           for c in doc["components"] if c.get("purl", "").startswith("pkg:deb/")}
    assert deb == {tuple(line.split(" ")) for line in listed if line}


@pytest.fixture(scope="module")
def broken_image(cpu_image, docker_client):
    """The cpu image with one locked wheel uninstalled (built from an in-memory Dockerfile; seconds)."""
    tag = "dsv4-flash-test:cpu-sbom-broken"
    dockerfile = (f"FROM {cpu_image[0]}\nUSER 0\nRUN pip uninstall -y {UNINSTALLED}\nUSER 2000:0\n").encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, network_mode="none")
    yield tag
    docker_client.images.remove(tag, force=True)


def test_an_image_missing_a_locked_wheel_fails_the_sbom_command_in_one_line(broken_image, tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "sbom", "--arch", "cpu", "--image", broken_image,
                             "--output", str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: SBOM of {broken_image} does not match the locks and the plan: locked wheel "
                               f"{UNINSTALLED}=="), lines[0]
    assert not (tmp_path / "sbom-cpu.cdx.json").exists() and (tmp_path / "sbom-cpu.cdx.json.rejected").exists()
