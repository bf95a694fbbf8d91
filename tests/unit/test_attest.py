"""Provenance and receipts as in-toto Statements, and `check`'s own reasoning (labels to a plan, layer
files compared) without a registry or a build: tests/integration/test_check.py runs the real thing."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

from dsv4_images import matrix, plan, provenance
from dsv4_images.attest import check, expect, statements
from dsv4_images.errors import UserError
from dsv4_images.wheelhouse import LockedFile

M = matrix.load()
CPU = M.resolve("cpu")
DIGEST = "sha256:" + "ab" * 32
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _plan(target=CPU, **kw):
    return plan.make(M, target, provenance.Provenance(REVISION, REVISION[:12], 1764547200), push=True, **kw)


def _provenance(target=CPU, **kw):
    p = _plan(target, **kw)
    files = [LockedFile("torch", "torch-2.13.0-cp311-none-manylinux_2_28_x86_64.whl",
                        "https://files.pythonhosted.org/x/torch.whl", "cd" * 32)]
    resolved = statements.materials(p, files, "dsv4-flash-base:bookworm-minbase-123", "sha256:" + "ef" * 32)
    return p, statements.provenance(p, "127.0.0.1:5000/dsv4-flash", DIGEST, resolved, started=1.0, finished=2.0)


def test_the_provenance_is_a_valid_slsa_v1_statement_about_the_image_digest():
    p, body = _provenance()
    again = statements.parse(statements.dumps(body))
    assert again["_type"] == "https://in-toto.io/Statement/v1"
    assert again["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statements.subject_digest(again) == DIGEST
    assert again["subject"][0]["name"] == "127.0.0.1:5000/dsv4-flash"
    definition = again["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["labels"] == dict(sorted(p.labels.items()))
    assert definition["internalParameters"]["sourceDateEpoch"] == 1764547200
    assert again["predicate"]["runDetails"]["metadata"]["startedOn"] == "1970-01-01T00:00:01Z"


def test_the_provenance_names_every_lock_patch_wheel_and_the_base():
    p, body = _provenance()
    deps = body["predicate"]["buildDefinition"]["resolvedDependencies"]
    named = {d.get("name"): d for d in deps}
    for rel in CPU.lock_paths.values():
        assert named[rel]["digest"]["sha256"] == p.labels[f"io.dsv4-flash.lock.{rel.rsplit('/', 1)[1]}.sha256"]
    for patch in CPU.patches:
        assert named[patch.file]["digest"]["sha256"] == patch.sha256
    assert named["torch-2.13.0-cp311-none-manylinux_2_28_x86_64.whl"]["digest"]["sha256"] == "cd" * 32
    assert any(d.get("digest", {}).get("gitCommit") == REVISION for d in deps)
    base = named["base"]
    if CPU.base.runtime:  # cpu names the pinned Debian digest only when the base came from it
        assert base["digest"]["sha256"] == CPU.base_manifest_sha256() or "@sha256:" in base["uri"]


def test_the_sm_provenance_records_the_bootstrapped_base_recipe_and_manifest():
    sm = M.resolve("sm120")
    _, body = _provenance(sm, flashinfer_modules="ci")
    base = next(d for d in body["predicate"]["buildDefinition"]["resolvedDependencies"] if d.get("name") == "base")
    assert base["digest"]["sha256"] == sm.base_manifest_sha256()
    assert base["annotations"]["recipe"] == sm.base_recipe()
    assert body["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]["FLASHINFER_MODULE_SET"] == "ci"


@pytest.mark.parametrize("mutate, said", [
    (lambda b: b.update(_type="https://in-toto.io/Statement/v0.1"), "Wrong statement type"),
    (lambda b: b.update(subject=[]), "At least one subject required"),
    (lambda b: b["predicate"]["buildDefinition"].update(buildTypo="x"), "not a valid in-toto Statement"),
    (lambda b: b.pop("predicateType"), "Predicate type required"),
])
def test_a_statement_that_breaks_the_specification_is_one_line(mutate, said):
    _, body = _provenance()
    mutate(body)
    with pytest.raises(UserError) as exc:
        statements.parse(json.dumps(body))
    assert said in str(exc.value) and "\n" not in str(exc.value)


def test_provenance_problems_name_a_wrong_subject_and_a_wrong_revision():
    p, body = _provenance()
    assert statements.provenance_problems(body, DIGEST, p.labels) == []
    other = "sha256:" + "12" * 32
    labels = dict(p.labels, **{"org.opencontainers.image.revision": "f" * 40})
    problems = statements.provenance_problems(body, other, labels)
    assert len(problems) == 2
    assert "subject" in problems[0] and "revision" in problems[1]


def _report(target="cpu", status="PASS"):
    return {"created": "2026-12-06T07:00:00Z", "url": "http://127.0.0.1:8000", "target": target, "prompt_set": "v3",
            "server": {"model": "dsv4-tiny-mtp", "max_model_len": 2048, "api_key": "never copied"},
            "status": status, "verdict": {"passed": status == "PASS", "failures": []},
            "phases": [{"spec_decode": {"drafts": 120}, "classes": {"corrupted": 0}, "requests": 12},
                       {"spec_decode": {"drafts": 80}, "classes": {"corrupted": 1}, "requests": 8}],
            "acceptance_by_workload": {"chat": {"acceptance_rate": 0.917, "mean_acceptance_length": 2.8}},
            "checks": [{"name": "mtp-fires", "status": "PASS", "detail": "..."}]}


def test_a_receipt_is_bound_to_the_image_digest_and_carries_what_the_server_reported():
    labels = {"io.dsv4-flash.target": "cpu", "org.opencontainers.image.revision": REVISION}
    body = statements.parse(statements.dumps(statements.receipt(_report(), "reg/dsv4-flash", DIGEST, labels)))
    p = body["predicate"]
    assert statements.subject_digest(body) == DIGEST and body["predicateType"] == statements.VERIFY_RECEIPT
    assert p["server"] == {"url": "http://127.0.0.1:8000", "model": "dsv4-tiny-mtp", "max_model_len": 2048}
    assert p["specDecode"]["drafts"] == 200 and p["corrupted"] == 1 and p["requests"] == 20
    assert p["image"]["revision"] == REVISION and p["passed"] is True
    line = statements.describe_receipt(body)
    assert "PASS on dsv4-tiny-mtp" in line and "1 corrupted" in line and "chat 91.7%" in line


# ---- check: from labels to a plan ---------------------------------------------------------------

def test_the_owner_is_read_back_from_the_source_label():
    assert expect.owner_of(M, M.source_url("someone-else")) == "someone-else"
    assert expect.owner_of(M, "https://example.com/x") is None


def test_the_created_label_gives_the_epoch_back():
    assert expect.epoch_of(provenance.rfc3339(1764547200)) == 1764547200
    with pytest.raises(UserError, match="created label"):
        expect.epoch_of("yesterday")


HERE = provenance.Provenance(REVISION, REVISION[:12], 1764547200)


@pytest.fixture(autouse=True)
def checkout_at_revision(monkeypatch):
    """check asks git where the checkout is; here it is a clean checkout of REVISION."""
    monkeypatch.setattr(check.provenance, "current", lambda: HERE)


def _labels_here(**changes):
    labels = dict(plan.make(M, CPU, HERE, owner="acme").labels)
    labels.update(changes)
    return labels


def test_a_checkout_with_uncommitted_changes_is_refused(monkeypatch):
    labels = _labels_here()
    monkeypatch.setattr(check.provenance, "current", lambda: provenance.Provenance(REVISION + "-dirty", "x", 0))
    with pytest.raises(UserError, match="this checkout has uncommitted changes"):
        check.rebuild_plan(M, labels, "t", use_cache=False)


def test_labels_of_an_image_built_here_plan_the_same_build():
    labels = _labels_here()
    planned = check.rebuild_plan(M, labels, "dsv4-flash-check:cpu-x", use_cache=False)
    assert planned.labels == labels and planned.no_cache and planned.reproducible
    assert planned.build_args["SOURCE_URL"] == M.source_url("acme")


@pytest.mark.parametrize("changes, said", [
    ({"org.opencontainers.image.revision": "f" * 40}, "run `git checkout ffffffffffff`"),
    ({"org.opencontainers.image.revision": "f" * 40 + "-dirty"}, "uncommitted changes"),
    ({"io.dsv4-flash.lock.cpu.txt.sha256": "0" * 64}, "io.dsv4-flash.lock.cpu.txt.sha256: image '000"),
    ({"org.opencontainers.image.source": "https://example.com/x"}, "is not https://"),
    ({"io.dsv4-flash.target": "sm999"}, "sm999"),
])
def test_labels_this_checkout_cannot_rebuild_are_refused_in_one_line(changes, said):
    with pytest.raises(UserError) as exc:
        check.rebuild_plan(M, _labels_here(**changes), "t", use_cache=False)
    assert said in str(exc.value) and "\n" not in str(exc.value)


def test_an_image_without_our_labels_is_refused():
    with pytest.raises(UserError, match="not built by dsv4-images"):
        check.rebuild_plan(M, {"maintainer": "someone"}, "t", use_cache=False)


# ---- check: layers compared file by file --------------------------------------------------------

def _layer(files: dict[str, bytes], compress: bool) -> io.BytesIO:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1764547200
            tar.addfile(info, io.BytesIO(data))
    data = gzip.compress(raw.getvalue(), mtime=0) if compress else raw.getvalue()
    return io.BytesIO(data)


def test_layer_files_reads_gzip_and_plain_layers_alike():
    files = {"etc/a": b"one", "opt/b": b"two" * 1000}
    gz = check.layer_files(_layer(files, True), "application/vnd.docker.image.rootfs.diff.tar.gzip")
    plain = check.layer_files(_layer(files, False), "application/vnd.oci.image.layer.v1.tar")
    assert gz == plain and set(gz) == set(files) and gz["opt/b"][4] == 3000
    with pytest.raises(UserError, match="zstd"):
        check.layer_files(_layer(files, False), "application/vnd.oci.image.layer.v1.tar+zstd")


def test_file_differences_name_the_changed_the_missing_and_the_added_file():
    a = check.layer_files(_layer({"etc/a": b"one", "opt/b": b"two", "opt/c": b"gone"}, False), "tar")
    b = check.layer_files(_layer({"etc/a": b"one", "opt/b": b"TWO!", "opt/d": b"new"}, False), "tar")
    count, lines = check.file_differences(a, b)
    assert count == 3
    assert lines[0].startswith("opt/b: size 3 != 4, sha256 ") and "(published != rebuilt)" in lines[0]
    assert lines[1].startswith("opt/c: only in the published layer (size 4")
    assert lines[2].startswith("opt/d: only in the rebuilt layer (size 3")


def test_sbom_differences_name_components_either_side_lacks():
    one = {"components": [{"purl": "pkg:pypi/torch@2.13.0", "version": "2.13.0", "hashes": [{"content": "aa"}]},
                          {"purl": "pkg:deb/debian/bash@5.2", "version": "5.2"}]}
    two = {"components": [{"purl": "pkg:pypi/torch@2.13.0", "version": "2.13.0", "hashes": [{"content": "bb"}]},
                          {"purl": "pkg:deb/debian/bash@5.2", "version": "5.2"}]}
    assert check.sbom_differences(one, one) == []
    lines = check.sbom_differences(one, two)
    assert lines == ["attached SBOM lists pkg:pypi/torch@2.13.0 2.13.0, the image does not hold it",
                     "the image holds pkg:pypi/torch@2.13.0 2.13.0, the attached SBOM does not list it"]
