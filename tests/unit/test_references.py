"""The image-reference validator against the real Docker daemon: `docker tag` of the local base image
to each candidate says what Docker accepts, `docker image inspect` what it reads as a digest
reference. Every candidate's repository holds "dsv4refcheck", so no one else's tag is moved; each
tag made here is removed again."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from dsv4_images import references
from tests.conftest import need

SCRATCH_IMAGE = "dsv4-flash-test:empty"  # imported from an empty tarball: no pull, no build
R = "dsv4refcheck"
SHA = "0123456789abcdef" * 4

TAG_CANDIDATES = [
    # accepted
    f"{R}", f"{R}:t", f"{R}:T_1.2-x", f"{R}:{'a' * 128}", f"{R}/a/b/c:1", f"{R}/a.b_c__d---e:1",
    f"localhost/{R}:1", f"localhost:5000/{R}:v1", f"127.0.0.1:5000/{R}:v1", f"Registry.Example.COM/{R}:x",
    f"ghcr.io/{R}/dsv4-flash:0.33.0-sm100", f"my-host.local/{R}", f"{R}:_x", f"{R}0:1", f"{R}:1-",
    f"{R}.aaaaa", f"local_host.x/{R}", f"docker.io/{R}:1", f"index.docker.io/{R}:1", f"{R}:1e309", f"{R}:nan",
    f"{R}/" + "a" * (255 - len(f"docker.io/{R}/")),                     # 255 characters in all
    R + "a" * (255 - len(f"docker.io/library/{R}")),                    # the same, counting library/
    # refused
    "", " ", f"{R}:", f"{R}:{'a' * 129}", f"{R}:.x", f"{R}:-x", f"{R}:a+b", f"{R}:a:b", f"{R}:ä",
    f"{R.upper()}", f"{R}/Upper", f"Foo/{R}", f"{R}/a-/b", f"{R}/-a", f"{R}/a..b", f"{R}/a___b", f"{R}//a",
    f"{R}/", f"/{R}", f"{R}/a b", f"{R} ", f"{R}\t", f"{R}/é", f"-{R}", f".{R}", f"_{R}",
    f"{R}@sha256:{SHA}", f"{R}:t@sha256:{SHA}", f"{R}@sha256:abc", f"{R}@md5:{SHA[:32]}",
    f"localhost:port/{R}", f"Local_host.x/{R}", f"-host.x/{R}", f"host-.x/{R}", f"[::1]:5000/{R}:t",
    f"sha256:{R}", "sha256", SHA, f"{R}/" + "a" * (256 - len(f"docker.io/{R}/")),
    R + "a" * (256 - len(f"docker.io/library/{R}")), f"{R};id", f"{R}$(id)", f"{R}`id`", f"{R}:١٢",
    f"{R}/١٢", f"{R}/a__b-c/x", f"{R}:" + "\x01",
]


def daemon_tags(ref: str) -> bool:
    made = subprocess.run(["docker", "tag", SCRATCH_IMAGE, ref], capture_output=True, text=True, timeout=60)
    if made.returncode == 0:
        subprocess.run(["docker", "rmi", "--no-prune", ref], capture_output=True, timeout=60, check=True)
    return made.returncode == 0


@pytest.fixture(scope="module")
def docker_with_base():
    need(shutil.which("docker") is not None, "no docker command")
    need(subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0, "no Docker daemon answers")
    empty = subprocess.run(["tar", "cf", "-", "--files-from", "/dev/null"], capture_output=True, check=True).stdout
    made = subprocess.run(["docker", "import", "-", SCRATCH_IMAGE], input=empty, capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr


@pytest.mark.docker
def test_the_validator_agrees_with_docker_tag(docker_with_base, report):
    disagreements = []
    for ref in TAG_CANDIDATES:
        ours = references.tag_target_problem(ref)
        if (ours is None) != daemon_tags(ref):
            disagreements.append(f"{ref!r}: ours {ours or 'accepted'}, docker {'refused' if ours is None else 'accepted'}")
    accepted = sum(references.tag_target_problem(r) is None for r in TAG_CANDIDATES)
    report["reference_candidates_vs_docker_tag"] = {"candidates": len(TAG_CANDIDATES), "accepted": accepted,
                                                     "disagreements": len(disagreements)}
    assert not disagreements, "\n".join(disagreements)
    assert 15 <= accepted <= len(TAG_CANDIDATES) - 30  # the sample holds both kinds


DIGEST_CANDIDATES = [f"{R}@sha256:{SHA}", f"{R}:t@sha256:{SHA}", f"localhost:5000/{R}@sha256:{SHA}",
                     f"{R}@sha512:{SHA * 2}", f"{R}@sha256:{SHA[:-1]}", f"{R}@sha256:{SHA.upper()}",
                     f"{R}@md5:{SHA[:32]}", f"{R}@sha256:{SHA}x", f"{R}@:{SHA}", f"{R}@sha256", f"{R.upper()}@sha256:{SHA}"]


@pytest.mark.docker
def test_digest_references_read_as_the_daemon_reads_them(docker_with_base):
    """inspect ends in "No such image: REF" for a well-formed reference it does not hold, and in the
    parse error ("invalid checksum digest length", "unsupported digest algorithm", ...) otherwise."""
    disagreements = []
    for ref in DIGEST_CANDIDATES:
        out = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, text=True, timeout=60)
        daemon_reads = out.returncode != 0 and out.stderr.strip().endswith(f"No such image: {ref}")
        try:
            references.parse(ref)
            ours = True
        except ValueError:
            ours = False
        if ours != daemon_reads:
            disagreements.append(f"{ref!r}: ours {ours}, docker: {out.stderr.strip()[:120]}")
    assert not disagreements, "\n".join(disagreements)


@pytest.mark.parametrize("ref, words", [
    ("ghcr.io/Acme/x:1", "must be lowercase"), ("x:" + "a" * 129, "is not 1-128 of"),
    ("x@sha256:" + SHA, "a tag cannot carry a digest"), (SHA, "image id"), ("sha256:1", "digest algorithm"),
    ("[::1]:5000/x", "IPv6"), ("a" * 300, "at most 255"), ("x y", "only ASCII"),
])
def test_each_refusal_says_which_rule(ref, words):
    assert words in references.tag_target_problem(ref)
