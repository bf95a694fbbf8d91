"""Verify receipts: `verify --image REF` binds its verdict to the image's digest, `--attach` pushes it.

The receipt is an in-toto Statement (statements.receipt) whose subject is REF's manifest digest,
resolved in the registry before any request is sent (a ref that does not resolve is one line, exit 1).
What binds the deployment to the image is the operator's word (--image) plus what the server says of
itself; verify checks the part it can: the target the image's labels name is the target whose
thresholds verify judged by (the `image` check)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import write_file
from . import artifacts, registry, statements
from .check import image_config, image_manifest

import json


@dataclass(frozen=True)
class BoundImage:
    ref: str
    repo: registry.Repository
    manifest: registry.Manifest
    labels: dict

    @property
    def name(self) -> str:
        return self.repo.name

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def target(self) -> str | None:
        return self.labels.get("io.dsv4-flash.target")


def resolve(ref: str) -> BoundImage:
    repo, reference = registry.open_reference(ref)
    manifest = image_manifest(repo, reference)
    return BoundImage(ref, repo, manifest, image_config(repo, manifest)[2])


def default_path(image: BoundImage) -> Path:
    return Path(f"verify-receipt-{image.digest[7:19]}.intoto.json")


def write(image: BoundImage, report: dict, path: Path) -> bytes:
    payload = statements.dumps(statements.receipt(report, image.name, image.digest, image.labels))
    write_file(path, payload, f"cannot write the receipt to {path}")
    return payload


def attach(image: BoundImage, payload: bytes) -> str:
    created = json.loads(payload)["predicate"].get("created") or ""
    return artifacts.attach(image.repo, image.manifest, statements.MEDIA_TYPE, payload, "verify-receipt.intoto.json",
                            {statements.PREDICATE_ANNOTATION: statements.VERIFY_RECEIPT,
                             **({"org.opencontainers.image.created": created} if created else {})})
