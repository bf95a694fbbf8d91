"""After a push: the build's provenance written, and it and the SBOM attached to the pushed image.

Every tag of one push names the same manifest; the documents are attached once per repository and
digest. The provenance is also written to reports/ (the GitHub workflow signs that file)."""

from __future__ import annotations

import hashlib
import os

from .. import REPO_ROOT
from ..errors import write_file
from . import artifacts, registry, statements

SBOM_TYPE = "application/vnd.cyclonedx+json"


def run_identity(env=os.environ) -> tuple[str | None, str | None]:
    """(builder id, invocation id) on a GitHub Actions runner, as SLSA's GitHub builders spell them; else (None, None)."""
    if env.get("GITHUB_ACTIONS") != "true" or not env.get("GITHUB_WORKFLOW_REF"):
        return None, None
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    run = f"{server}/{env.get('GITHUB_REPOSITORY')}/actions/runs/{env.get('GITHUB_RUN_ID')}/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}"
    return f"{server}/{env['GITHUB_WORKFLOW_REF']}", run


def attach_to_pushed(plan, pushed: dict[str, str], sbom_payload: bytes | None, resolved: list[dict],
                     started: float, finished: float, emit=print) -> list[str]:
    """Attach the SBOM and the provenance to each pushed (repository, digest); returns the provenance files."""
    builder_id, invocation = run_identity()
    created = {"org.opencontainers.image.created": plan.provenance.created}
    written, done = [], set()
    for ref, digest in pushed.items():
        repo, _ = registry.open_reference(ref)
        if (repo.name, digest) in done:
            continue
        done.add((repo.name, digest))
        subject = repo.manifest(digest)
        body = statements.provenance(plan, repo.name, digest, resolved, started=started, finished=finished,
                                     builder_id=builder_id,
                                     byproducts=[{"name": "sbom.cdx.json", "mediaType": SBOM_TYPE,
                                                  "digest": {"sha256": hashlib.sha256(sbom_payload).hexdigest()}}] if sbom_payload else None)
        if invocation:
            body["predicate"]["runDetails"]["metadata"]["invocationId"] = invocation
        payload = statements.dumps(body)
        path = REPO_ROOT / "reports" / f"provenance-{plan.target.name}-{digest[7:19]}.intoto.json"
        write_file(path, payload, f"cannot write the provenance to {path}")
        written.append(str(path))
        if sbom_payload:
            emit(f"attached SBOM to {repo.name}@{digest[:19]}...: "
                 f"{artifacts.attach(repo, subject, SBOM_TYPE, sbom_payload, 'sbom.cdx.json', created)}")
        emit(f"attached provenance to {repo.name}@{digest[:19]}...: "
             f"{artifacts.attach(repo, subject, statements.MEDIA_TYPE, payload, 'provenance.intoto.json', {**created, statements.PREDICATE_ANNOTATION: statements.SLSA_PROVENANCE})}"
             f" ({len(payload)} bytes, {path.relative_to(REPO_ROOT)})")
    return written
