"""Artifacts attached to an image (an SBOM, a provenance statement): OCI 1.1 manifests whose `subject`
is the image's manifest, found again through the registry's referrers API or, on registries without
one, the referrers tag fallback of the OCI distribution spec.

An artifact is an OCI image manifest with an `artifactType`, the empty config blob `{}` and one layer,
the document itself (its mediaType the artifact type, its file name the `org.opencontainers.image.title`
annotation). A registry with the referrers API says so by answering the manifest PUT with an
`OCI-Subject` header and lists the artifact at /v2/<name>/referrers/<digest>. One without it (Debian's
docker-registry 2.8, which stores such manifests but ignores `subject`) gets the fallback: the tag
`sha256-<hex of the subject's digest>` names an OCI index whose `manifests` are the descriptors of the
artifacts attached to that image.

The fallback tag is read, changed and written back: two writers attaching to the same image at once can
each read the old index and the second PUT loses the first one's entry (the OCI spec says the same of
its fallback; the lost artifact stays in the registry and attaching it again restores the entry). The
artifact manifest is always pushed before the index is updated, so the index never names a manifest
the registry does not have (registry 2.8 refuses such an index anyway).
"""

from __future__ import annotations

import json

from ..errors import UserError
from .registry import OCI_INDEX, OCI_MANIFEST, Manifest, Repository, digest_of

EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"


def fallback_tag(subject_digest: str) -> str:
    """The referrers tag of the OCI distribution spec: 'sha256:abc...' -> 'sha256-abc...'."""
    algorithm, _, hexpart = subject_digest.partition(":")
    return f"{algorithm[:32]}-{hexpart[:64]}"


def _fallback_index(repo: Repository, subject_digest: str) -> Manifest | None:
    tag = fallback_tag(subject_digest)
    found = repo.manifest_or_none(tag)
    body = found.json() if found is not None else None
    if found is not None and (found.media_type != OCI_INDEX or not isinstance(body, dict)
                              or not isinstance(body.get("manifests"), list)):
        raise UserError(f"{repo.name}:{tag} should be the OCI index of what is attached to {subject_digest}, "
                        f"but it is a {found.media_type or 'manifest of no media type'}")
    return found


def attach(repo: Repository, subject: Manifest, artifact_type: str, payload: bytes, filename: str,
           annotations: dict[str, str] | None = None) -> str:
    """Push payload as an artifact of artifact_type attached to subject; returns the artifact manifest's digest.
    Attaching the same document (same payload, type, file name and annotations) again lists it once."""
    config = {"mediaType": EMPTY_TYPE, **repo.push_blob(EMPTY)}
    layer = {"mediaType": artifact_type, **repo.push_blob(payload), "annotations": {TITLE: filename}}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type, "config": config,
                "layers": [layer], "subject": subject.descriptor()}
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    digest, headers = repo.push_manifest(raw, OCI_MANIFEST, digest_of(raw))
    if headers.get("OCI-Subject"):
        return digest  # the registry indexes it: the referrers API lists it
    descriptor = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw), "artifactType": artifact_type}
    if annotations:
        descriptor["annotations"] = manifest["annotations"]
    current = _fallback_index(repo, subject.digest)
    index = current.json() if current else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if not any(isinstance(m, dict) and m.get("digest") == digest for m in index["manifests"]):
        index["manifests"].append(descriptor)
        repo.push_manifest(json.dumps(index, separators=(",", ":")).encode(), OCI_INDEX, fallback_tag(subject.digest))
    return digest


def referrers(repo: Repository, subject_digest: str, artifact_type: str | None = None) -> list[dict]:
    """The descriptors of the artifacts attached to subject_digest (of artifact_type when given), from the
    referrers API when the registry has it, else from the fallback tag; [] when neither lists any."""
    found = repo.referrers_api(subject_digest, artifact_type)
    if found is None:
        index = _fallback_index(repo, subject_digest)
        found = [m for m in index.json()["manifests"] if isinstance(m, dict)] if index else []
    return [m for m in found if artifact_type is None or m.get("artifactType") == artifact_type]


def fetch(repo: Repository, descriptor: dict, subject_digest: str | None = None) -> tuple[dict, bytes]:
    """The artifact's manifest and its one layer's bytes, both checked against their digests (and sizes);
    UserError when it is not attached to subject_digest (when given) or has not exactly one layer."""
    digest = descriptor.get("digest")
    if not isinstance(digest, str):
        raise UserError(f"a referrer of {subject_digest or 'an image'} in {repo.name} has no digest: {json.dumps(descriptor)[:160]}")
    found = repo.manifest(digest)
    if isinstance(descriptor.get("size"), int) and descriptor["size"] != len(found.raw):
        raise UserError(f"the artifact {digest} in {repo.name} is {len(found.raw)} bytes, its descriptor says {descriptor['size']}")
    manifest = found.json()
    if not isinstance(manifest, dict):
        raise UserError(f"the artifact {digest} in {repo.name} is not a JSON object")
    subject = (manifest.get("subject") or {}).get("digest")
    if subject_digest and subject != subject_digest:
        raise UserError(f"the artifact {digest} in {repo.name} is attached to {subject or 'no image'}, not {subject_digest}")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict) or "digest" not in layers[0]:
        count = len(layers) if isinstance(layers, list) else 0
        raise UserError(f"the artifact {digest} in {repo.name} has {count} layers, not the one document expected")
    payload = repo.blob(layers[0]["digest"])
    if isinstance(layers[0].get("size"), int) and layers[0]["size"] != len(payload):
        raise UserError(f"the document of the artifact {digest} in {repo.name} is {len(payload)} bytes, "
                        f"its manifest says {layers[0]['size']}")
    return manifest, payload
