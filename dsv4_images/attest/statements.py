"""in-toto Statements about an image: its SLSA v1 build provenance, and verify receipts.

Both are Statements (https://in-toto.io/Statement/v1) whose subject is the image's manifest digest in
its registry, so what they say is bound to exactly the bytes a user pulls. They are built and read
through the in-toto attestation project's own messages (`in-toto-attestation`: the Statement, the
ResourceDescriptor and SLSA's Provenance protobufs), so a field name or shape the specifications do
not have is refused here, not by the first verifier that reads it. They are unsigned: the GitHub
workflow signs the very same document with its own identity (see .github/workflows).

The provenance's materials (`resolvedDependencies`) are every input of the build with its digest:
the source revision, every file of the build context (the Dockerfile, each lock, each patch, the
in-image scripts), every locked wheel the build installed (from the wheelhouse, by sha256), the
vLLM sdist and external sources when compiled, and the base (its pinned digest or the bootstrap's
recipe, snapshot and package manifest, and the base image it gave).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement

from .. import REPO_ROOT, __version__
from ..checksums import sha256_file
from ..errors import UserError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
VERIFY_RECEIPT = "https://github.com/dsv4-flash/dsv4-flash-images/blob/main/docs/attestations.md#verify-receipt-v1"
BUILD_TYPE = "https://github.com/dsv4-flash/dsv4-flash-images/blob/main/docs/attestations.md#build-v1"
MEDIA_TYPE = "application/vnd.in-toto+json"          # the artifactType both are attached under
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"   # tells provenance and receipts apart in a referrers list


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64:
        raise UserError(f"expected a sha256: digest, got {digest[:80]!r}")
    return value


def _timestamp(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def statement(subject_name: str, subject_digest: str, predicate_type: str, predicate: dict) -> dict:
    """A validated Statement as the JSON object the specification gives."""
    subject = {"name": subject_name, "digest": {"sha256": _hex(subject_digest)}}
    body = {"_type": STATEMENT_TYPE, "subject": [subject], "predicateType": predicate_type, "predicate": predicate}
    parse(json.dumps(body))
    return body


def dumps(body: dict) -> bytes:
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


def parse(text: str | bytes) -> dict:
    """A Statement read back and checked against the in-toto messages (and SLSA's, for provenance);
    one line naming what is wrong otherwise."""
    try:
        body = json.loads(text)
        message = json_format.Parse(text if isinstance(text, str) else text.decode(), statement_pb2.Statement())
        Statement.copy_from_pb(message).validate()
        if body.get("predicateType") == SLSA_PROVENANCE:
            json_format.ParseDict(body["predicate"], provenance_pb2.Provenance())
    except (ValueError, json_format.ParseError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"not a valid in-toto Statement: {str(exc).splitlines()[0][:200]}") from None
    if body.get("_type") != STATEMENT_TYPE:
        raise UserError(f"not an in-toto v1 Statement (_type {body.get('_type')!r})")
    return body


def subject_digest(body: dict) -> str:
    """The first subject's sha256 digest (parse has checked there is a subject with a digest)."""
    value = body["subject"][0]["digest"].get("sha256")
    if not isinstance(value, str):
        raise UserError(f"its subject has no sha256 digest ({', '.join(body['subject'][0]['digest'])[:80]})")
    return "sha256:" + value


def _object(value) -> dict:
    return value if isinstance(value, dict) else {}


# ---- provenance --------------------------------------------------------------------------------

def materials(plan, locked_files, base_ref: str, base_id: str | None = None) -> list[dict]:
    """Every input of `plan`'s build with its digest (see the module's docstring)."""
    target, revision = plan.target, plan.provenance.revision
    out = [{"uri": f"git+{plan.build_args['SOURCE_URL']}@{revision}", "digest": {"gitCommit": revision.removesuffix("-dirty")},
            "annotations": {"dirty": plan.provenance.dirty}}]
    for rel in plan.context_files:
        out.append({"name": rel, "digest": {"sha256": sha256_file(REPO_ROOT / rel)}})
    for f in locked_files:
        out.append({"name": f.filename, "uri": f.url, "digest": {"sha256": f.sha256}})
    if plan.vllm_source == "sdist" and target.vllm.sdist_url:
        out.append({"name": target.vllm.sdist_filename, "uri": target.vllm.sdist_url,
                    "digest": {"sha256": target.vllm.sdist_sha256}})
        for pin in target.externals:  # the uncompressed archive's sha256: gzip is not reproducible
            if pin.tar_sha256:  # named as the tar the digest is of; the .tar.gz downloaded is not that digest
                out.append({"name": pin.archive.removesuffix(".gz"), "digest": {"sha256": pin.tar_sha256, "gitCommit": pin.commit},
                            "annotations": {"downloaded": pin.archive, "digestOf": "the uncompressed tar inside it"}})
    boot = target.base.bootstrap
    if target.base.runtime and "@sha256:" in base_ref:
        out.append({"name": "base", "uri": f"docker://{base_ref}", "digest": {"sha256": base_ref.rsplit(":", 1)[1]}})
    elif boot:
        base = {"name": "base", "uri": f"{boot.snapshot or boot.mirror}#{boot.suite}",
                "digest": {"sha256": target.base_manifest_sha256()},
                "annotations": {"recipe": target.base_recipe(), "manifest": boot.manifest, "tag": base_ref}}
        if base_id:
            base["annotations"]["imageId"] = base_id
        out.append(base)
    return out


def provenance(plan, subject_name: str, subject_digest: str, resolved: list[dict], *, started: float | None = None,
               finished: float | None = None, builder_id: str | None = None, byproducts: list[dict] | None = None) -> dict:
    """The SLSA v1 provenance Statement of `plan`'s image, pushed as `subject_name@subject_digest`."""
    external = {"target": plan.target.name, "dockerfile": plan.dockerfile, "stage": plan.stage,
                "vllmSource": plan.vllm_source, "buildArgs": {k: v for k, v in sorted(plan.build_args.items())},
                "labels": dict(sorted(plan.labels.items())), "tags": list(plan.tags)}
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": {"sourceDateEpoch": plan.provenance.epoch, "reproducible": plan.reproducible,
                                   "noCache": plan.no_cache, "dsv4Images": __version__},
            "resolvedDependencies": resolved},
        "runDetails": {"builder": {"id": builder_id or f"https://github.com/dsv4-flash/dsv4-flash-images/dsv4-images@{__version__}"},
                       "metadata": {k: v for k, v in (("startedOn", _timestamp(started)),
                                                      ("finishedOn", _timestamp(finished))) if v},
                       **({"byproducts": byproducts} if byproducts else {})}}
    return statement(subject_name, subject_digest, SLSA_PROVENANCE, predicate)


def provenance_problems(body: dict, manifest_digest: str, labels: dict[str, str]) -> list[str]:
    """What makes an attached provenance wrong for the image it is attached to."""
    problems = []
    if subject_digest(body) != manifest_digest:
        problems.append(f"its subject is {subject_digest(body)[:19]}..., not the image {manifest_digest[:19]}...")
    recorded = _object(_object(_object(body["predicate"].get("buildDefinition")).get("externalParameters")).get("labels"))
    for key in ("org.opencontainers.image.revision", "io.dsv4-flash.target"):
        if recorded.get(key) != labels.get(key):
            problems.append(f"it records {key}={str(recorded.get(key))[:80]!r}, the image says {labels.get(key)!r}")
    return problems


# ---- verify receipts ---------------------------------------------------------------------------

def receipt(report: dict, image_name: str, image_digest: str, image_labels: dict[str, str]) -> dict:
    """What `verify` found about a deployment, bound to the image digest it was told the deployment runs."""
    phases = report.get("phases", [])
    counters = [p["spec_decode"] for p in phases if isinstance(p.get("spec_decode"), dict)]
    predicate = {
        "verifier": {"id": f"dsv4-images verify {__version__}", "promptSet": report.get("prompt_set")},
        "created": report.get("created"),
        "image": {"target": image_labels.get("io.dsv4-flash.target"),
                  "revision": image_labels.get("org.opencontainers.image.revision"),
                  "version": image_labels.get("org.opencontainers.image.version")},
        "server": {"url": report.get("url"), **{k: v for k, v in (report.get("server") or {}).items()
                                                if k in ("model", "max_model_len", "version")}},
        "judgedAs": report.get("target"),
        "status": report.get("status"),
        "passed": bool(report.get("verdict", {}).get("passed")),
        "failures": report.get("verdict", {}).get("failures", []),
        "specDecode": {"drafts": sum(c.get("drafts") or 0 for c in counters),
                       "acceptanceByWorkload": report.get("acceptance_by_workload", {})},
        "corrupted": sum(p.get("classes", {}).get("corrupted", 0) for p in phases),
        "requests": sum(p.get("requests", 0) for p in phases),
        "checks": [{"name": c["name"], "status": c["status"]} for c in report.get("checks", [])],
    }
    return statement(image_name, image_digest, VERIFY_RECEIPT, predicate)


def describe_receipt(body: dict) -> str:
    """One line of what a receipt says; a field missing or of another type is shown as '?' (a receipt is read
    from a registry, where anything can be attached)."""
    p = body["predicate"]
    server, spec = _object(p.get("server")), _object(p.get("specDecode"))

    def shown(value) -> str:
        return "?" if value is None or isinstance(value, (dict, list)) else str(value)[:80]

    rates = [(str(w)[:40], a.get("acceptance_rate")) for w, a in _object(spec.get("acceptanceByWorkload")).items()
             if isinstance(a, dict)]
    acc = ", ".join(f"{w} {r:.1%}" for w, r in rates if isinstance(r, (int, float)) and not isinstance(r, bool))
    return (f"{shown(p.get('created'))}: {shown(p.get('status'))} on {shown(server.get('model'))} (max_model_len "
            f"{shown(server.get('max_model_len'))}), {shown(p.get('requests'))} requests, {shown(p.get('corrupted'))} corrupted, "
            f"{shown(spec.get('drafts'))} drafts" + (f", acceptance {acc}" if acc else ""))
