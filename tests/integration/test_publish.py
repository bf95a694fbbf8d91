"""Publishing for real: push the cpu image to a local registry with build.py, pull it back by
digest, and prove the build reproduces bit for bit; and the failure cases give one clear line."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import subprocess
import sys
import time

import pytest
from docker import errors as docker_errors

from dsv4_images import REPO_ROOT, base, matrix, plan, provenance, publish, wheelhouse
from dsv4_images.checksums import sha256_file
from dsv4_images.attest import artifacts, sbom, statements
from dsv4_images.attest import registry as distribution
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
    for name in (image, "dsv4-flash-check"):
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


# ---- what is attached to the pushed image, and `check` on it ---------------------------------------

def _cli(*args, timeout=3600):
    return subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _pushed_ref(pushed) -> str:
    return f"{pushed['image']}@{next(iter(pushed['digests'].values()))}"


def test_the_push_attached_the_sbom_and_the_provenance_naming_every_input(pushed, report):
    repo, digest = distribution.open_reference(_pushed_ref(pushed))
    found = artifacts.referrers(repo, digest)
    kinds = sorted(d["artifactType"] for d in found)
    assert kinds == ["application/vnd.cyclonedx+json", "application/vnd.in-toto+json"], found
    by_type = {d["artifactType"]: artifacts.fetch(repo, d, subject_digest=digest)[1] for d in found}
    sbom_text = by_type["application/vnd.cyclonedx+json"]
    sbom.validate(sbom_text.decode())
    body = statements.parse(by_type["application/vnd.in-toto+json"])
    assert statements.subject_digest(body) == digest
    deps = body["predicate"]["buildDefinition"]["resolvedDependencies"]
    named = {d.get("name"): d["digest"] for d in deps}
    for rel in TARGET.lock_paths.values():
        assert named[rel]["sha256"] == sha256_file(REPO_ROOT / rel)
    for patch in TARGET.patches:
        assert named[patch.file]["sha256"] == patch.sha256
    assert "base" in named and named["base"].get("sha256")
    locked = [r for r in wheelhouse.parse_lock((REPO_ROOT / "locks/cpu.txt").read_text(), "cpu.txt")]
    wheels = [d for d in deps if d.get("uri", "").startswith("https://")]
    assert len(wheels) >= len(locked)
    report["documents"] = {"sbom_bytes": len(sbom_text), "provenance_bytes": len(by_type["application/vnd.in-toto+json"]),
                           "materials": len(deps)}


def test_a_verify_receipt_attached_to_the_image(pushed, mtp_server, tmp_path, report):
    receipt = tmp_path / "receipt.json"
    result = _cli("verify", "--url", mtp_server.url, "--concurrency", "1", "--max-tokens", "32", "--workload", "instructions",
                  "--image", _pushed_ref(pushed), "--receipt", str(receipt), "--attach", timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "receipt attached to " in result.stdout
    body = statements.parse(receipt.read_bytes())
    assert statements.subject_digest(body) == next(iter(pushed["digests"].values()))
    assert body["predicate"]["passed"] is True and body["predicate"]["specDecode"]["drafts"] > 0
    assert any(c["name"] == "image" and c["status"] == "PASS" for c in body["predicate"]["checks"])
    report.setdefault("documents", {})["receipt_bytes"] = receipt.stat().st_size


def test_check_rebuilds_the_pushed_image_from_a_clean_cache_and_finds_it_identical(pushed, report):
    """`check REF`: the labels give the inputs, a clean rebuild gives the same image, and what is attached verifies
    (the receipt of the test above included)."""
    started = time.monotonic()
    result = _cli("check", _pushed_ref(pushed))
    report["check"] = {"seconds": round(time.monotonic() - started, 1)}
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert re.search(r"^check: IDENTICAL: ", result.stdout, re.M), result.stdout[-2000:]
    assert re.search(r"^attached sbom sha256:\S+: verified$", result.stdout, re.M), result.stdout[-2000:]
    assert re.search(r"^attached provenance sha256:\S+: verified$", result.stdout, re.M), result.stdout[-2000:]
    assert re.search(r"^attached verify-receipt sha256:\S+: verified \(.*PASS on ", result.stdout, re.M), result.stdout[-2000:]
    seconds = json.loads((REPO_ROOT / "reports" / "check-cpu.json").read_text())["seconds"]
    report["check"].update(seconds)


def _tamper(pushed_ref: str, tag: str) -> tuple[int, str, str]:
    """The pushed image with one small file of one of its layers changed, pushed as `tag` through the registry API
    (no local copy of the image: only that layer's blob is read and written): (layer index, file path, digest)."""
    repo, digest = distribution.open_reference(pushed_ref)
    manifest = repo.manifest(digest)
    body = manifest.json()
    config = json.loads(repo.blob(body["config"]["digest"]))
    for index in reversed(range(len(body["layers"]))):
        layer = body["layers"][index]
        if layer["size"] > 64 << 20:
            continue
        raw = gzip.decompress(repo.blob(layer["digest"]))
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            small = [m for m in tar.getmembers() if m.isreg() and m.name.startswith("opt/dsv4-flash/") and m.size < 1 << 16]
        if small:
            break
    name = small[0].name
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tin, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tout:
        for member in tin:
            data = tin.extractfile(member).read() if member.isreg() else None
            if member.name == name:
                data += b"\n# changed after the build\n"
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data) if data is not None else None)
    changed = gzip.compress(out.getvalue(), mtime=0)
    body["layers"][index] = {**layer, **repo.push_blob(changed)}
    config["rootfs"]["diff_ids"][index] = "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()
    body["config"] = {**body["config"], **repo.push_blob(json.dumps(config).encode())}
    new_digest, _ = repo.push_manifest(json.dumps(body).encode(), manifest.media_type, tag)
    return index, name, new_digest


def test_check_names_the_layer_and_the_file_of_an_image_changed_after_the_build(pushed, docker_client, report):
    index, name, digest = _tamper(_pushed_ref(pushed), "tampered")
    started = time.monotonic()
    result = _cli("check", "--use-cache", f"{pushed['image']}@{digest}")
    report["check_tampered_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    assert re.search(rf"^layer {index}: DIFFERENT: .*, 1 files differ$", result.stdout, re.M), result.stdout[-3000:]
    assert re.search(rf"^    {re.escape(name)}: size \d+ != \d+, sha256 \w+ != \w+ \(published != rebuilt\)$",
                     result.stdout, re.M), result.stdout[-3000:]
    assert re.search(r"^check: DIFFERENT: ", result.stdout, re.M)
    assert "attached: nothing" in result.stdout  # nothing was attached to the changed image


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
