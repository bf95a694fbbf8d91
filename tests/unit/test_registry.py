"""dsv4_images/attest: the registry client and artifacts attached to an image, against a real registry
(Debian's docker-registry 2.8 on loopback, no Docker) and, for what that registry cannot do (tamper
with bytes, ask for a token, have a referrers API), a tiny stub HTTP server."""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from dsv4_images.attest import artifacts
from dsv4_images.attest.registry import (DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Manifest, Repository, digest_of,
                                         is_loopback, open_reference)
from dsv4_images.errors import UserError

from ..conftest import need
from ..support.registry import binary_available, free_port, no_docker_login, registry  # noqa: F401 - a fixture

SBOM, PROVENANCE = "application/vnd.cyclonedx+json", "application/vnd.in-toto+json"


pytestmark = pytest.mark.usefixtures("no_docker_login")


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    need(binary_available(), "Debian's docker-registry is not installed (./dev setup installs it)")
    with registry(tmp_path_factory.mktemp("registry")) as served:
        yield served


class Recording(requests.Session):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def request(self, method, url, *args, **kwargs):
        self.calls.append((method, url))
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def repo(address, request):
    return Repository(address, "attest/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-"),
                      session=Recording())


def push_image(repo: Repository, media_type: str = OCI_MANIFEST, tag: str = "v1", layer: bytes = b"layer bytes") -> Manifest:
    """A small image pushed through the API: its config and one layer, then the manifest, tagged."""
    docker = media_type == DOCKER_MANIFEST
    config = repo.push_blob(json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode())
    manifest = {"schemaVersion": 2, "mediaType": media_type,
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json" if docker
                           else "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker
                            else "application/vnd.oci.image.layer.v1.tar+gzip", **repo.push_blob(layer)}]}
    raw = json.dumps(manifest, indent=3).encode()
    digest, _ = repo.push_manifest(raw, media_type, tag)
    assert digest == digest_of(raw)
    return Manifest(digest, media_type, raw)


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# --- the real registry -------------------------------------------------------------------------------


def test_a_blob_and_a_manifest_round_trip_by_tag_and_by_digest(repo):
    image = push_image(repo)
    by_tag, by_digest = repo.manifest("v1"), repo.manifest(image.digest)
    assert by_tag == by_digest == image
    assert by_tag.json()["layers"][0]["size"] == len(b"layer bytes")
    assert by_tag.descriptor() == {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.raw)}
    assert repo.blob(by_tag.json()["layers"][0]["digest"]) == b"layer bytes"


def test_a_blob_the_registry_has_is_not_uploaded_again(repo):
    first = repo.push_blob(b"once")
    calls = len(repo.session.calls)
    assert repo.push_blob(b"once") == first == {"digest": digest_of(b"once"), "size": 4}
    assert [method for method, _ in repo.session.calls[calls:]] == ["HEAD"]


def test_open_blob_streams_a_few_megabytes_and_checks_the_digest_at_the_end(repo):
    data = os.urandom(5 << 20)
    descriptor = repo.push_blob(data)
    with repo.open_blob(descriptor["digest"]) as stream:
        first = stream.read(1000)
        chunks = [first]
        while chunk := stream.read(300_000):
            chunks.append(chunk)
    assert len(first) == 1000 and b"".join(chunks) == data


def test_attach_lists_each_document_once_filters_by_type_and_fetch_checks_the_subject(repo):
    image, other = push_image(repo), push_image(repo, tag="v2", layer=b"another image")
    sbom = artifacts.attach(repo, image, SBOM, b'{"bomFormat": "CycloneDX"}', "sbom.cdx.json", {"b": "2", "a": "1"})
    provenance = artifacts.attach(repo, image, PROVENANCE, b'{"_type": "statement"}', "provenance.json")
    assert artifacts.attach(repo, image, SBOM, b'{"bomFormat": "CycloneDX"}', "sbom.cdx.json", {"a": "1", "b": "2"}) == sbom

    listed = artifacts.referrers(repo, image.digest)
    assert [d["digest"] for d in listed] == [sbom, provenance]
    assert listed[0] == {"mediaType": OCI_MANIFEST, "digest": sbom, "size": len(repo.manifest(sbom).raw),
                         "artifactType": SBOM, "annotations": {"a": "1", "b": "2"}}
    assert [d["digest"] for d in artifacts.referrers(repo, image.digest, PROVENANCE)] == [provenance]
    assert artifacts.referrers(repo, other.digest) == []

    manifest, payload = artifacts.fetch(repo, listed[0], image.digest)
    assert payload == b'{"bomFormat": "CycloneDX"}'
    assert manifest["artifactType"] == SBOM and manifest["subject"] == image.descriptor()
    assert manifest["config"] == {"mediaType": artifacts.EMPTY_TYPE, "digest": digest_of(b"{}"), "size": 2}
    assert manifest["layers"][0]["mediaType"] == SBOM
    assert manifest["layers"][0]["annotations"] == {"org.opencontainers.image.title": "sbom.cdx.json"}
    assert artifacts.fetch(repo, listed[1])[1] == b'{"_type": "statement"}'
    with pytest.raises(UserError) as excinfo:
        artifacts.fetch(repo, listed[0], other.digest)
    assert one_line(excinfo) == f"the artifact {sbom} in {repo.name} is attached to {image.digest}, not {other.digest}"


def test_registry_2_8_has_no_referrers_api_so_the_fallback_tag_is_an_oci_index(repo):
    image = push_image(repo)
    assert repo.referrers_api(image.digest) is None  # 404: the fallback is what the test above exercised
    digest = artifacts.attach(repo, image, SBOM, b"{}", "sbom.json")
    tag = "sha256-" + image.digest.removeprefix("sha256:")
    assert artifacts.fallback_tag(image.digest) == tag
    index = repo.manifest(tag)
    assert index.media_type == OCI_INDEX
    assert index.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(repo.manifest(digest).raw), "artifactType": SBOM}]}
    # Registry 2.8 stores the artifact's subject and artifactType as pushed, but sends no OCI-Subject header.
    raw = repo.manifest(digest).raw
    assert "OCI-Subject" not in repo.push_manifest(raw, OCI_MANIFEST, digest)[1]
    assert json.loads(raw)["subject"]["digest"] == image.digest


def test_a_docker_schema2_manifest_can_be_the_subject(repo):
    image = push_image(repo, media_type=DOCKER_MANIFEST)
    assert repo.manifest("v1").media_type == DOCKER_MANIFEST
    digest = artifacts.attach(repo, repo.manifest("v1"), SBOM, b'{"sbom": 1}', "sbom.json")
    [listed] = artifacts.referrers(repo, image.digest, SBOM)
    manifest, payload = artifacts.fetch(repo, listed, image.digest)
    assert listed["digest"] == digest and payload == b'{"sbom": 1}'
    assert manifest["subject"] == {"mediaType": DOCKER_MANIFEST, "digest": image.digest, "size": len(image.raw)}


def test_fetch_refuses_an_artifact_that_is_not_one_document(repo):
    image = push_image(repo)
    layers = [{"mediaType": SBOM, **repo.push_blob(b"a")}, {"mediaType": SBOM, **repo.push_blob(b"b")}]
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM, "layers": layers,
                      "config": {"mediaType": artifacts.EMPTY_TYPE, **repo.push_blob(b"{}")},
                      "subject": image.descriptor()}).encode()
    digest, _ = repo.push_manifest(raw, OCI_MANIFEST, digest_of(raw))
    with pytest.raises(UserError) as excinfo:
        artifacts.fetch(repo, {"digest": digest, "size": len(raw)}, image.digest)
    assert one_line(excinfo) == f"the artifact {digest} in {repo.name} has 2 layers, not the one document expected"


def test_a_fallback_tag_that_is_not_an_index_is_named(repo):
    image = push_image(repo)
    push_image(repo, tag=artifacts.fallback_tag(image.digest))
    with pytest.raises(UserError) as excinfo:
        artifacts.referrers(repo, image.digest)
    assert one_line(excinfo).startswith(f"{repo.name}:{artifacts.fallback_tag(image.digest)} should be the OCI index")


def test_an_unknown_manifest_or_blob_is_one_line(repo):
    push_image(repo)
    assert repo.manifest_or_none("v9") is None and repo.manifest_or_none(digest_of(b"none")) is None
    with pytest.raises(UserError) as excinfo:
        repo.manifest("v9")
    assert one_line(excinfo) == f"no manifest v9 in {repo.name}"
    with pytest.raises(UserError) as excinfo:
        Repository(repo.registry, "no/such-repository").manifest("latest")
    assert one_line(excinfo) == f"no manifest latest in {repo.registry}/no/such-repository"
    with pytest.raises(UserError) as excinfo:
        repo.blob(digest_of(b"none"))
    assert one_line(excinfo) == f"no blob {digest_of(b'none')} in {repo.name}"


def test_a_registry_that_does_not_answer_is_one_line():
    port = free_port()
    with pytest.raises(UserError) as excinfo:
        Repository(f"127.0.0.1:{port}", "x/y").manifest("latest")
    assert one_line(excinfo) == f"registry 127.0.0.1:{port} does not answer over http (connection refused)"


def test_https_to_a_plain_http_registry_is_one_line(address):
    with pytest.raises(UserError) as excinfo:
        Repository(address, "x/y", scheme="https").manifest("latest")
    message = one_line(excinfo)  # OpenSSL's words for it vary: "wrong version number", "record layer failure"
    assert message.startswith(f"registry {address} does not answer over https (TLS: ") and message.endswith(")"), message


def test_a_read_only_registry_refusing_a_push_is_one_line(tmp_path):
    need(binary_available(), "Debian's docker-registry is not installed (./dev setup installs it)")
    with registry(tmp_path / "ro", read_only=True) as served:
        repo = Repository(served, "x/y")
        with pytest.raises(UserError) as excinfo:
            repo.push_blob(b"data")
        assert one_line(excinfo) == (f"{served}/x/y: starting the upload of the blob {digest_of(b'data')} was refused "
                                     "(HTTP 405 Method not allowed)")
        with pytest.raises(UserError) as excinfo:
            repo.push_manifest(b"{}", OCI_MANIFEST, "v1")
        assert one_line(excinfo) == f"{served}/x/y: storing the manifest v1 ({OCI_MANIFEST}) was refused (HTTP 405 Method not allowed)"


# --- a stub registry: tampered bytes, auth, a referrers API --------------------------------------------


@contextmanager
def stub(route):
    """An HTTP server on 127.0.0.1 answering route(method, path, headers, body) -> (status, headers, body);
    yields (address, the requests it got)."""
    seen: list[tuple[str, str, dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path, dict(self.headers), body))
            status, headers, payload = route(self.command, self.path, self.headers, body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_PUT = do_POST = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
ERRORS = {"Content-Type": "application/json"}


def test_tampered_blobs_and_manifests_are_refused():
    other = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [], "x": 1}).encode()

    def route(method, path, headers, body):
        if path == f"/v2/x/y/manifests/{digest_of(MANIFEST)}":
            return 200, {"Content-Type": OCI_MANIFEST}, other
        if path == "/v2/x/y/manifests/v1":
            return 200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest_of(MANIFEST)}, other
        return 200, {}, b"not the blob " * 100_000

    with stub(route) as (address, _):
        repo, wanted = Repository(address, "x/y"), digest_of(b"the blob")
        for read in (lambda: repo.blob(wanted), lambda: repo.open_blob(wanted).read()):
            with pytest.raises(UserError) as excinfo:
                read()
            assert one_line(excinfo) == (f"the blob from {address}/x/y does not match its digest: expected {wanted}, "
                                         f"got {digest_of(b'not the blob ' * 100_000)}")
        with pytest.raises(UserError) as excinfo:
            repo.manifest(digest_of(MANIFEST))
        assert one_line(excinfo) == (f"the manifest {digest_of(MANIFEST)} from {address}/x/y does not match its digest: "
                                     f"expected {digest_of(MANIFEST)}, got {digest_of(other)}")
        with pytest.raises(UserError) as excinfo:
            repo.manifest("v1")
        assert one_line(excinfo) == (f"the manifest v1 from {address}/x/y does not match the digest the registry gives "
                                     f"it: expected {digest_of(MANIFEST)}, got {digest_of(other)}")


def test_a_manifest_that_is_not_json_and_a_refusal_are_one_line():
    def route(method, path, headers, body):
        if path.endswith("/html"):
            return 200, {"Content-Type": "text/html"}, b"<html>\n<body>a captive portal</body></html>"
        return 403, ERRORS, json.dumps({"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}).encode()

    with stub(route) as (address, _):
        repo = Repository(address, "x/y")
        with pytest.raises(UserError) as excinfo:
            repo.manifest("html")
        assert one_line(excinfo) == f"the manifest html in {address}/x/y is not JSON (it starts '<html> <body>a captive portal</body></html>')"
        with pytest.raises(UserError) as excinfo:
            repo.manifest("v1")
        assert one_line(excinfo) == (f"{address}/x/y: reading the manifest v1 is not allowed "
                                     "(HTTP 403 DENIED: requested access to the resource is denied)")


def docker_login(tmp_path, host, user="alice", password="s3cret:x"):
    (tmp_path / "docker-config" / "config.json").write_text(json.dumps(
        {"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}))
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("logged_in", [False, True])
def test_a_bearer_challenge_gets_a_token_cached_per_scope(tmp_path, logged_in):
    tokens = iter(["T1", "T2", "T3"])

    def route(method, path, headers, body):
        if path.startswith("/token"):
            return 200, ERRORS, json.dumps({"token": next(tokens)}).encode()
        scope = "repository:x/y:pull" if method == "GET" else "repository:x/y:pull,push"
        wanted = "Bearer T1" if method == "GET" else "Bearer T2"
        if headers.get("Authorization") != wanted:
            return 401, {**ERRORS, "WWW-Authenticate": f'Bearer realm="http://{address}/token",service="stub",scope="{scope}"'}, \
                json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
        return (200, {"Content-Type": OCI_MANIFEST}, MANIFEST) if method == "GET" else (201, {}, b"")

    with stub(route) as (address, seen):
        basic = docker_login(tmp_path, address) if logged_in else None
        repo = Repository(address, "x/y")
        assert repo.manifest("v1").raw == MANIFEST
        assert repo.push_manifest(MANIFEST, OCI_MANIFEST, "v2")[0] == digest_of(MANIFEST)
        assert repo.manifest("v1").raw == MANIFEST  # T1 again, from the cache: no third token
    token_requests = [(path, headers.get("Authorization")) for _, path, headers, _ in seen if path.startswith("/token")]
    assert token_requests == [("/token?service=stub&scope=repository%3Ax%2Fy%3Apull", basic),
                              ("/token?service=stub&scope=repository%3Ax%2Fy%3Apull%2Cpush", basic)]
    assert [(m, h.get("Authorization")) for m, p, h, _ in seen if p.startswith("/v2/")] == [
        ("GET", None), ("GET", "Bearer T1"), ("PUT", "Bearer T1"), ("PUT", "Bearer T2"), ("GET", "Bearer T2"), ("GET", "Bearer T1")]


def test_a_basic_challenge_is_answered_with_the_docker_config_credentials(tmp_path):
    def route(method, path, headers, body):
        if headers.get("Authorization") == expected:
            return 200, {"Content-Type": OCI_MANIFEST}, MANIFEST
        return 401, {**ERRORS, "WWW-Authenticate": 'Basic realm="registry"'}, \
            json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()

    with stub(route) as (address, seen):
        expected = "Basic " + base64.b64encode(b"alice:s3cret:x").decode()
        with pytest.raises(UserError) as excinfo:
            Repository(address, "x/y").manifest("v1")
        assert one_line(excinfo) == f"{address}/x/y: reading the manifest v1 is not allowed (HTTP 401 UNAUTHORIZED: authentication required)"
        assert docker_login(tmp_path, f"https://{address}") == expected  # Docker's older key form
        assert Repository(address, "x/y").manifest("v1").raw == MANIFEST


@pytest.mark.parametrize("config, expected", [
    ("{not json", "is not Docker's JSON config (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    ('["auths"]', "is not Docker's JSON config ('list' object has no attribute 'get')"),
    ('{"auths": {"HOST": {"auth": "%%%"}}}', "auths['HOST'].auth is not base64 of user:password"),
    ('{"auths": {"HOST": {"auth": "%s"}}}' % base64.b64encode(b"no colon").decode(), "auths['HOST'].auth is not base64 of"),
    (None, "is not Docker's JSON config ([Errno 20] Not a directory: "),
])
def test_a_docker_config_that_cannot_be_read_is_one_line(tmp_path, monkeypatch, config, expected):
    def route(method, path, headers, body):
        return 401, {"WWW-Authenticate": 'Basic realm="registry"'}, b""

    with stub(route) as (address, _):
        path = tmp_path / "docker-config" / "config.json"
        if config is None:  # DOCKER_CONFIG names a file, not a directory
            monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "a-file"))
            (tmp_path / "a-file").write_text("")
            path = tmp_path / "a-file" / "config.json"
        else:
            path.write_text(config.replace("HOST", address))
        with pytest.raises(UserError) as excinfo:
            Repository(address, "x/y").manifest("v1")
    assert one_line(excinfo).startswith(f"{path}" + (": " if "auths[" in expected else " "))
    assert expected.replace("HOST", address) in str(excinfo.value)


def test_a_token_service_that_refuses_is_one_line():
    def route(method, path, headers, body):
        if path.startswith("/token"):
            return 401, ERRORS, json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}).encode()
        return 401, {"WWW-Authenticate": f'Bearer realm="http://{address}/token",service="stub",scope="repository:x/y:pull"'}, b""

    with stub(route) as (address, _):
        with pytest.raises(UserError) as excinfo:
            Repository(address, "x/y").manifest("v1")
    assert one_line(excinfo) == (f"the token service of {address} refused a token for repository:x/y:pull: "
                                 "HTTP 401 UNAUTHORIZED: bad credentials")


def test_a_registry_with_the_referrers_api_is_read_through_it_and_gets_no_fallback_tag():
    subject = Manifest(digest_of(MANIFEST), OCI_MANIFEST, MANIFEST)
    page1 = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest_of(b"1"), "size": 1, "artifactType": SBOM}]}
    page2 = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest_of(b"2"), "size": 1, "artifactType": PROVENANCE}]}

    def route(method, path, headers, body):
        if path.startswith(f"/v2/x/y/referrers/{subject.digest}"):  # ignores ?artifactType=, as servers may
            if "last=" in path:
                return 200, {"Content-Type": OCI_INDEX}, json.dumps(page2).encode()
            return 200, {"Content-Type": OCI_INDEX, "Link": f'</v2/x/y/referrers/{subject.digest}?last=1>; rel="next"'}, \
                json.dumps(page1).encode()
        if method == "HEAD":
            return 200, {}, b""
        if method == "PUT":
            return 201, {"OCI-Subject": subject.digest}, b""
        return 404, ERRORS, b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}'

    with stub(route) as (address, seen):
        repo = Repository(address, "x/y")
        assert [d["digest"] for d in artifacts.referrers(repo, subject.digest)] == [digest_of(b"1"), digest_of(b"2")]
        assert [d["digest"] for d in artifacts.referrers(repo, subject.digest, PROVENANCE)] == [digest_of(b"2")]
        assert seen[-2][1] == f"/v2/x/y/referrers/{subject.digest}?artifactType=application%2Fvnd.in-toto%2Bjson"
        digest = artifacts.attach(repo, subject, SBOM, b"{}", "sbom.json")
    puts = [path for method, path, _, _ in seen if method == "PUT"]
    assert puts == [f"/v2/x/y/manifests/{digest}"]  # the blobs were there (HEAD 200); no fallback tag


# --- names -------------------------------------------------------------------------------------------


def test_loopback_registries_are_spoken_to_over_http_others_over_https():
    assert [is_loopback(r) for r in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1")] == [True] * 5
    assert [is_loopback(r) for r in ("ghcr.io", "10.0.0.1:5000", "localhost.example.com:5000")] == [False] * 3
    assert Repository("localhost:5000", "x").scheme == "http" and Repository("ghcr.io", "x").scheme == "https"
    assert Repository("ghcr.io", "x", scheme="http").scheme == "http"


def test_open_reference():
    repo, reference = open_reference("ubuntu")
    assert (repo.registry, repo.path, repo.name, reference) == (
        "registry-1.docker.io", "library/ubuntu", "registry-1.docker.io/library/ubuntu", "latest")
    digest = "sha256:" + "a" * 64
    repo, reference = open_reference(f"ghcr.io/acme/dsv4-flash:sm100@{digest}")
    assert (repo.registry, repo.path, reference, repo.scheme) == ("ghcr.io", "acme/dsv4-flash", digest, "https")
    repo, reference = open_reference("127.0.0.1:5000/dsv4-flash:cpu")
    assert (repo.name, reference, repo.scheme) == ("127.0.0.1:5000/dsv4-flash", "cpu", "http")
    with pytest.raises(UserError) as excinfo:
        open_reference("Acme/x")
    assert one_line(excinfo) == "'Acme/x' is not an image reference: the repository name must be lowercase"
