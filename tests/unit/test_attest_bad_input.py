"""`check`, `verify --image` and the documents attached to an image, walked with hostile registries and
hostile contents: every bad input is one line `error: ...` and a non-zero exit (the CLI, in a subprocess,
against Debian's docker-registry 2.8 on loopback), and every bad attached document is a named problem of
check.verify_documents, never an exception. No Docker, and never a build: each `check` here is refused by
its reference, its registry or its labels before rebuild_plan lets it go further (and the subprocesses
that reach the labels run with the build and the daemon replaced by tripwires)."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests

from dsv4_images import REPO_ROOT, matrix, plan, provenance
from dsv4_images.attest import artifacts, check, statements
from dsv4_images.attest.registry import OCI_INDEX, OCI_MANIFEST, Manifest, Repository, digest_of
from dsv4_images.errors import UserError

from ..conftest import need
from ..support.registry import binary_available, free_port, no_docker_login, registry  # noqa: F401 - a fixture
from .test_registry import stub

CLI = Path(sys.executable).with_name("dsv4-images")
M = matrix.load()
CPU = M.resolve("cpu")
REVISION = "0123456789abcdef0123456789abcdef01234567"
HERE = provenance.Provenance(REVISION, REVISION[:12], 1764547200)
OTHER = "sha256:" + "ee" * 32
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


pytestmark = pytest.mark.usefixtures("no_docker_login")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(address, the registry's storage directory)."""
    need(binary_available(), "Debian's docker-registry is not installed (./dev setup installs it)")
    root = tmp_path_factory.mktemp("registry")
    with registry(root) as address:
        yield address, root / "storage"


@pytest.fixture
def repo(served, request):
    return Repository(served[0], "bad/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:70].strip("-"))


def stored_blob(served, digest: str) -> Path:
    return served[1] / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"


def delete_blob(repo: Repository, digest: str) -> None:
    assert requests.delete(f"http://{repo.registry}/v2/{repo.path}/blobs/{digest}", timeout=10).status_code == 202


def push_image(repo: Repository, config: bytes, tag: str = "v1", layer: bytes = b"layer") -> Manifest:
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **repo.push_blob(config)},
                "layers": [{"mediaType": LAYER, **repo.push_blob(layer)}]}
    raw = json.dumps(manifest).encode()
    digest, _ = repo.push_manifest(raw, OCI_MANIFEST, tag)
    return Manifest(digest, OCI_MANIFEST, raw)


def labelled(labels: dict) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                       "rootfs": {"type": "layers", "diff_ids": []}}).encode()


def labels_at(revision: str = REVISION, **changes) -> dict:
    labels = dict(plan.make(M, CPU, provenance.Provenance(revision, revision[:12], 1764547200), owner="acme").labels)
    labels.update(changes)
    return labels


def one_line_error(result: subprocess.CompletedProcess, code: int | None = 1) -> str:
    """The one stderr line of a refusal with exit `code` (None: any non-zero)."""
    assert result.returncode == code if code is not None else result.returncode not in (0, None), \
        (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *argv], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=os.environ)


TRIPWIRED = f"""
import sys
from dsv4_images import builder, docker_client, provenance
def trip(*a, **k):
    raise SystemExit("TRIPWIRE: check went past its refusals")
builder.execute = docker_client.connect = trip
provenance.current = lambda: provenance.Provenance({REVISION!r}, {REVISION[:12]!r}, 1764547200)
from dsv4_images.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_at_revision(*argv: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess whose checkout is a clean REVISION, with the build and the daemon as tripwires."""
    return subprocess.run([sys.executable, "-c", TRIPWIRED, *argv], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT, env=os.environ)


# ---- check REF: the registry and the image's shape ----------------------------------------------

def test_check_of_a_registry_that_does_not_answer():
    port = free_port()
    assert one_line_error(cli("check", f"127.0.0.1:{port}/x:y")) == \
        f"error: registry 127.0.0.1:{port} does not answer over http (connection refused)"


def test_check_of_a_repository_or_tag_that_does_not_exist(repo):
    push_image(repo, labelled({}))
    assert one_line_error(cli("check", f"{repo.registry}/no/such:tag")) == \
        f"error: no manifest tag in {repo.registry}/no/such"
    assert one_line_error(cli("check", f"{repo.name}:nosuchtag")) == f"error: no manifest nosuchtag in {repo.name}"


def test_check_of_an_index_without_linux_amd64(repo):
    arm = push_image(repo, labelled({}), tag="arm")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**arm.descriptor(), "platform": {"os": "linux", "architecture": "arm64"}}]}
    repo.push_manifest(json.dumps(index).encode(), OCI_INDEX, "multi")
    assert "is an index without a linux/amd64 image" in one_line_error(cli("check", f"{repo.name}:multi"))


def test_check_of_an_image_whose_config_blob_is_gone(repo):
    image = push_image(repo, labelled({}))
    delete_blob(repo, image.json()["config"]["digest"])
    assert one_line_error(cli("check", f"{repo.name}:v1")) == \
        f"error: no blob {image.json()['config']['digest']} in {repo.name}"


@pytest.mark.parametrize("config, said", [
    (b"not json at all", "is not JSON (it starts 'not json at all')"),
    (b"\xff\xfe\x00", "is not JSON"),
    (b"[1, 2]", "is not an image's configuration (no config.Labels object)"),
    (b'{"config": "x"}', "is not an image's configuration (no config.Labels object)"),
    (b'{"config": {"Labels": ["a"]}}', "is not an image's configuration (no config.Labels object)"),
    (json.dumps({"config": {"Labels": {"io.dsv4-flash.target": 5, "org.opencontainers.image.revision": 7}}}).encode(),
     "has labels that are not strings: io.dsv4-flash.target, org.opencontainers.image.revision"),
])
def test_check_of_a_config_that_is_not_an_image_s(repo, config, said):
    push_image(repo, config)
    assert said in one_line_error(cli("check", f"{repo.name}:v1"))


def test_check_of_a_config_blob_whose_bytes_are_not_its_digest(repo, served):
    config = labelled({"io.dsv4-flash.target": "cpu"})
    image = push_image(repo, config)
    stored_blob(served, image.json()["config"]["digest"]).write_bytes(b"X" * len(config))
    assert "does not match its digest" in one_line_error(cli("check", f"{repo.name}:v1"))


@pytest.mark.parametrize("labels", [{}, {"maintainer": "someone", "org.opencontainers.image.revision": "abc"}])
def test_check_of_an_image_without_our_labels(repo, labels):
    push_image(repo, labelled(labels))
    assert one_line_error(cli("check", f"{repo.name}:v1")) == \
        "error: the image has no io.dsv4-flash.target label: it was not built by dsv4-images"


def test_check_of_another_revision_names_the_checkout_to_make(repo):
    """Refused before any build, whether or not this checkout has changes of its own."""
    push_image(repo, labelled(labels_at("f" * 40)))
    error = one_line_error(cli("check", f"{repo.name}:v1"))
    assert error.startswith("error: the image was built from ffffffffffff, this checkout is at ")
    assert error.endswith("run `git checkout ffffffffffff` and check again")


@pytest.mark.parametrize("changes, said", [
    ({"org.opencontainers.image.created": "garbage"}, "the image's created label 'garbage' is not YYYY-MM-DDTHH:MM:SSZ"),
    ({"org.opencontainers.image.created": "2026-13-45T99:99:99Z"}, "is not YYYY-MM-DDTHH:MM:SSZ"),
    ({"io.dsv4-flash.target": "../../etc"}, "../../etc"),
    ({"org.opencontainers.image.source": "https://evil.example/x"}, "is not https://"),
])
def test_check_of_labels_this_checkout_cannot_plan(repo, changes, said):
    push_image(repo, labelled(labels_at(**changes)))
    error = one_line_error(cli_at_revision("check", f"{repo.name}:v1"), code=None)
    assert said in error and "TRIPWIRE" not in error


def test_check_of_a_registry_whose_token_service_does_not_answer():
    port = free_port()
    for challenge in (f'Bearer realm="http://127.0.0.1:{port}/token",service="x",scope="repository:x/y:pull"',
                      f"Bearer Realm=http://127.0.0.1:{port}/token, Service=x"):  # RFC 7235: any case, bare tokens
        with stub(lambda *_: (401, {"WWW-Authenticate": challenge}, b"")) as (address, _):
            assert one_line_error(cli("check", f"{address}/x/y:v1")) == \
                f"error: the token service http://127.0.0.1:{port}/token of {address} does not answer (connection refused)"


# ---- verify --image, sbom --image ------------------------------------------------------------------

def test_verify_with_an_image_that_does_not_resolve_sends_nothing_to_the_server():
    port = free_port()
    with stub(lambda *_: (200, {}, b"{}")) as (server, seen):
        result = cli("verify", "--url", f"http://{server}", "--image", f"127.0.0.1:{port}/x:y")
        assert one_line_error(result) == f"error: registry 127.0.0.1:{port} does not answer over http (connection refused)"
        assert seen == []


def test_verify_with_an_image_of_no_labels_json_sends_nothing_to_the_server(repo):
    push_image(repo, b"not json")
    with stub(lambda *_: (200, {}, b"{}")) as (server, seen):
        assert "is not JSON" in one_line_error(cli("verify", "--url", f"http://{server}", "--image", f"{repo.name}:v1"))
        assert seen == []


def test_verify_attach_and_receipt_need_an_image(tmp_path):
    for flags in (["--attach"], ["--receipt", str(tmp_path / "r.json")]):
        assert "they need --image REF" in one_line_error(cli("verify", "--url", "http://127.0.0.1:9", *flags), code=2)


def test_verify_receipt_to_a_path_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file" / "r.json", tmp_path):
        error = one_line_error(cli("verify", "--url", "http://127.0.0.1:9", "--image", "127.0.0.1:9/x:y",
                                   "--receipt", str(path)), code=2)
        assert error.startswith("error: verify: argument --receipt: "), error


def test_sbom_of_an_image_the_daemon_does_not_have():
    """One line whether the daemon answers (no such image) or not."""
    one_line_error(cli("sbom", "--arch", "cpu", "--image", "nosuchimage-dsv4-review"))


# ---- the documents attached to an image: each a named problem -------------------------------------

def _verify(repo: Repository, subject: Manifest, labels: dict | None = None) -> tuple[list[dict], list[str]]:
    return check.verify_documents(repo, subject, labels or labels_at(), None, emit=lambda _: None)


def _receipt(digest: str, predicate: dict | None = None) -> bytes:
    if predicate is None:
        return statements.dumps(statements.receipt({"status": "PASS", "created": "2026-12-06T00:00:00Z"},
                                                   "r/x", digest, labels_at()))
    return json.dumps({"_type": statements.STATEMENT_TYPE, "subject": [{"name": "r/x", "digest": {"sha256": digest[7:]}}],
                       "predicateType": statements.VERIFY_RECEIPT, "predicate": predicate}).encode()


def _attach_statement(repo, subject, payload: bytes) -> str:
    return artifacts.attach(repo, subject, statements.MEDIA_TYPE, payload, "x.intoto.json")


def test_an_sbom_that_is_not_cyclonedx_or_not_text_is_a_problem(repo):
    subject = push_image(repo, labelled(labels_at()))
    artifacts.attach(repo, subject, check.SBOM_TYPE, b'{"bomFormat": "nope"}', "sbom.cdx.json")
    artifacts.attach(repo, subject, check.SBOM_TYPE, b"\xff\xfe not text", "sbom.cdx.json")
    found, problems = _verify(repo, subject)
    assert [d["kind"] for d in found] == ["sbom", "sbom"] and len(problems) == 2
    assert "SBOM is not valid CycloneDX 1.6" in problems[0] and "the SBOM is not UTF-8 text" in problems[1]


def test_a_provenance_of_another_digest_or_of_no_build_definition_is_a_problem(repo):
    subject = push_image(repo, labelled(labels_at()))
    p = plan.make(M, CPU, HERE, owner="acme")
    _attach_statement(repo, subject, statements.dumps(statements.provenance(p, "r/x", OTHER, [])))
    bare = {"_type": statements.STATEMENT_TYPE, "subject": [{"name": "r/x", "digest": {"sha256": subject.digest[7:]}}],
            "predicateType": statements.SLSA_PROVENANCE, "predicate": {"runDetails": {"builder": {"id": "x"}}}}
    _attach_statement(repo, subject, json.dumps(bare).encode())
    found, problems = _verify(repo, subject)
    assert [d["kind"] for d in found] == ["provenance", "provenance"]
    assert found[0]["problems"] == [f"its subject is {OTHER[:19]}..., not the image {subject.digest[:19]}..."]
    assert [p.split(",")[0] for p in found[1]["problems"]] == [
        "it records org.opencontainers.image.revision='None'", "it records io.dsv4-flash.target='None'"]


def test_a_receipt_bound_to_another_digest_or_of_another_shape_is_read(repo):
    subject = push_image(repo, labelled(labels_at()))
    _attach_statement(repo, subject, _receipt(OTHER))
    _attach_statement(repo, subject, _receipt(subject.digest, {"specDecode": {"acceptanceByWorkload": {"a": {"acceptance_rate": "x"}}},
                                                               "server": "nope"}))
    found, problems = _verify(repo, subject)
    assert [d["kind"] for d in found] == ["verify-receipt", "verify-receipt"]
    assert found[0]["problems"] == [f"bound to {OTHER[:19]}..., not this image"]
    assert found[1]["problems"] == [] and found[1]["summary"] == "?: ? on ? (max_model_len ?), ? requests, ? corrupted, ? drafts"


def test_a_statement_whose_subject_has_no_sha256_is_a_problem(repo):
    subject = push_image(repo, labelled(labels_at()))
    body = json.loads(_receipt(subject.digest, {"status": "PASS"}))
    body["subject"][0]["digest"] = {"sha512": "ab" * 64}
    _attach_statement(repo, subject, json.dumps(body).encode())
    found, problems = _verify(repo, subject)
    assert found[0]["problems"] == ["its subject has no sha256 digest (sha512)"]


def test_an_unknown_artifact_is_listed_as_not_verified_and_is_no_problem(repo):
    """A Sigstore bundle that actions/attest pushes beside ours: named, not called verified, not failing check."""
    subject = push_image(repo, labelled(labels_at()))
    artifacts.attach(repo, subject, "application/vnd.dev.sigstore.bundle.v0.3+json", b"{}", "bundle.json")
    found, problems = _verify(repo, subject)
    assert problems == [] and found[0]["kind"] == "unknown"
    assert found[0]["unverified"] == "artifact type application/vnd.dev.sigstore.bundle.v0.3+json is not one check reads"


def test_an_artifact_whose_document_is_gone_or_corrupt_is_a_problem(repo, served):
    subject = push_image(repo, labelled(labels_at()))
    gone, corrupt = _receipt(subject.digest), _receipt(subject.digest) + b" "
    _attach_statement(repo, subject, gone)
    _attach_statement(repo, subject, corrupt)
    delete_blob(repo, digest_of(gone))
    stored_blob(served, digest_of(corrupt)).write_bytes(b"{" + b" " * (len(corrupt) - 1))
    found, problems = _verify(repo, subject)
    assert [d["kind"] for d in found] == ["unreadable", "unreadable"]
    assert found[0]["problems"] == [f"no blob {digest_of(gone)} in {repo.name}"]
    assert "does not match its digest" in found[1]["problems"][0]


def test_a_fallback_tag_that_is_not_an_index_is_a_problem(repo):
    subject = push_image(repo, labelled(labels_at()))
    push_image(repo, labelled({}), tag=artifacts.fallback_tag(subject.digest))
    found, problems = _verify(repo, subject)
    assert found == [] and len(problems) == 1
    assert problems[0].startswith("the attached documents cannot be listed: ") and "should be the OCI index" in problems[0]


def test_a_listing_that_misnames_an_artifact_or_lacks_its_digest_is_a_problem(repo, monkeypatch):
    subject = push_image(repo, labelled(labels_at()))
    digest = _attach_statement(repo, subject, _receipt(subject.digest))
    listed = [{"artifactType": check.SBOM_TYPE, "digest": digest}, {"artifactType": check.SBOM_TYPE}]
    monkeypatch.setattr(artifacts, "referrers", lambda *_: listed)
    found, problems = _verify(repo, subject)
    assert found[0]["problems"] == [f"listed as {check.SBOM_TYPE}, but its manifest says {statements.MEDIA_TYPE}"]
    assert found[1]["digest"] == "no digest" and "has no digest" in found[1]["problems"][0]


# ---- a published layer read from the registry ------------------------------------------------------

def _tar_gz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def test_a_layer_whose_bytes_are_not_its_digest_says_so_not_that_the_tar_is_broken(repo, served):
    layer = _tar_gz({"etc/a": os.urandom(50_000)})
    digest = repo.push_blob(layer)["digest"]
    assert check.layer_files(repo.open_blob(digest), LAYER)["etc/a"][4] == 50_000
    stored_blob(served, digest).write_bytes(layer[:100] + b"\0" * (len(layer) - 100))
    with pytest.raises(UserError) as excinfo:
        check.layer_files(repo.open_blob(digest), LAYER)
    assert str(excinfo.value).startswith(f"the blob from {repo.name} does not match its digest: expected {digest}")


def test_a_layer_that_is_not_a_tar_is_one_line(repo):
    for data, media_type in ((b"not gzip" * 100, LAYER), (gzip.compress(b"not a tar" * 100), LAYER),
                             (b"\1" * 2000, "application/vnd.oci.image.layer.v1.tar")):
        digest = repo.push_blob(data)["digest"]
        with pytest.raises(UserError) as excinfo:
            check.layer_files(repo.open_blob(digest), media_type)
        assert str(excinfo.value).startswith(f"a layer ({media_type}) is not a readable tar: ")


# ---- the referrers API, and the provenance's materials --------------------------------------------

def test_a_referrers_page_linking_back_to_itself_is_one_line():
    seen = []

    def route(method, path, headers, body):  # links back 20 times, then stops: a client that loops fails, not hangs
        link = {"Link": f'<{path}>; rel="next"'} if len(seen) < 20 else {}
        return 200, {"Content-Type": OCI_INDEX, **link}, \
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()

    with stub(route) as (address, seen):
        with pytest.raises(UserError, match="link back to a page already read"):
            artifacts.referrers(Repository(address, "x/y"), OTHER)
        assert len(seen) <= 2


def test_an_external_s_material_is_named_as_the_tar_its_digest_is_of():
    sdist = next((t for t in map(M.resolve, M.targets) if t.vllm.sdist_url and any(p.tar_sha256 for p in t.externals)), None)
    if sdist is None:
        pytest.skip("no target compiles vLLM with pinned externals")
    p = plan.make(M, sdist, HERE, vllm="sdist")
    named = {m.get("name"): m for m in statements.materials(p, [], "base:x")}
    for pin in (pin for pin in sdist.externals if pin.tar_sha256):
        entry = named[pin.archive.removesuffix(".gz")]
        assert entry["digest"]["sha256"] == pin.tar_sha256 and entry["annotations"]["downloaded"] == pin.archive
        assert pin.archive not in named


@pytest.mark.parametrize("data", ["text\n", b"bytes"], ids=["text", "bytes"])
def test_every_document_write_fails_in_one_line_naming_what_it_wrote(data, tmp_path):
    """The receipt, the SBOM, the provenance, check's and verify's reports all go through errors.write_file:
    a report directory that cannot be made (here a file stands where it should be) is one line, no traceback."""
    from dsv4_images.errors import UserError, write_file
    (tmp_path / "reports").write_text("")
    with pytest.raises(UserError) as exc:
        write_file(tmp_path / "reports" / "check-cpu.json", data, "cannot write the check report to X")
    assert str(exc.value).startswith("cannot write the check report to X: ") and "\n" not in str(exc.value)
    made = write_file(tmp_path / "new" / "deeper" / "doc.json", data, "unused")
    assert made.read_bytes() == (data if isinstance(data, bytes) else data.encode())
