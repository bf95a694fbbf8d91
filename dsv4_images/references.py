"""Image references as Docker reads them (the grammar of distribution/reference, as the Docker 20.10
daemon applies it), so a name or tag Docker would refuse is refused before any build starts.

    reference  := name [":" tag] ["@" digest]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := domain-component ["." domain-component]* [":" port]     (letters of any case)
    path-component := [a-z0-9]+ ([._] | "__" | "-"+) [a-z0-9]+ ...        (lowercase only)
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex, sha256 (64), sha384 (96) or sha512 (128) lowercase hex digits

Docker's own rules on top of the grammar, each checked here against the daemon (tests/unit/
test_references.py): the first component is a domain only when it has a "." or ":" or is
"localhost" (newer Docker also takes one with an uppercase letter; 20.10 does not); a name without a domain is read as docker.io/[library/]name
and that full name may have at most 255 characters; a name that is 64 hex digits is refused (it
reads as an image id), and so is the name "sha256". IPv6 registry addresses ([::1]:5000) are not
accepted by the 20.10 daemon and are refused here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_TOTAL_MAX = 255
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?")
PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
IMAGE_ID = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    domain: str      # "docker.io" when the name has none ("" when Docker reads the first part as a path)
    path: str        # "library/x" for a bare "x" on docker.io
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path


def _digest_problem(digest: str) -> str | None:
    if not DIGEST.fullmatch(digest):
        return f"digest {digest!r} is not ALGORITHM:HEX (e.g. sha256: and 64 hex digits)"
    algorithm, hexpart = digest.split(":", 1)
    if algorithm not in DIGEST_HEX_LENGTH:
        return f"digest algorithm {algorithm!r} is not one Docker supports (sha256, sha384, sha512)"
    if len(hexpart) != DIGEST_HEX_LENGTH[algorithm] or hexpart != hexpart.lower():
        return f"a {algorithm} digest is {DIGEST_HEX_LENGTH[algorithm]} lowercase hex digits, got {len(hexpart)}"
    return None


def parse(ref: str) -> Reference:
    """The reference's parts; ValueError naming the first rule it breaks."""
    if not ref:
        raise ValueError("it is empty")
    if not ref.isascii() or not ref.isprintable() or " " in ref:
        raise ValueError("only ASCII letters, digits and . _ - / : @ are allowed")
    if IMAGE_ID.fullmatch(ref):
        raise ValueError("64 hex digits read as an image id, not a name")
    rest, at, digest = ref.partition("@")
    if at and (problem := _digest_problem(digest)):
        raise ValueError(problem)
    name, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1:]
        if not TAG.fullmatch(tag):
            raise ValueError(f"tag {tag[:40]!r} is not 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)")
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, path = ("docker.io" if first == "index.docker.io" else first), remainder
        if first.startswith("["):
            raise ValueError("IPv6 registry addresses are not accepted by the Docker daemon")
        if not DOMAIN.fullmatch(domain):
            if not PATH_COMPONENT.fullmatch(domain):
                raise ValueError(f"registry {domain[:40]!r} is not a host name or address with an optional :port")
            domain, path = "", name  # Docker's grammar then reads it as a path component ("local_host.x/y")
    else:
        domain, path = "docker.io", name
    components = path.split("/")
    if "/" not in path and domain == "docker.io":
        path = f"library/{path}"
    for component in components:
        if not PATH_COMPONENT.fullmatch(component):
            if component and component.lower() != component and PATH_COMPONENT.fullmatch(component.lower()):
                raise ValueError("the repository name must be lowercase")
            raise ValueError(f"repository component {component[:40]!r} is not lowercase letters and digits "
                             "joined by '.', '_', '__' or '-'")
    full = f"{domain}/{path}" if domain else path
    if len(full) > NAME_TOTAL_MAX:
        raise ValueError(f"the repository name {full[:40]}... is {len(full)} characters, at most "
                         f"{NAME_TOTAL_MAX} (counting docker.io/ when no registry is named)")
    if path in ("library/sha256", "sha256") and domain == "docker.io":
        raise ValueError("the name 'sha256' reads as a digest algorithm")
    return Reference(domain, path, tag, digest if at else None)


def tag_target_problem(ref: str) -> str | None:
    """Why `docker tag IMAGE ref` would be refused (None: it is accepted)."""
    try:
        parsed = parse(ref)
    except ValueError as exc:
        return str(exc)
    if parsed.digest:
        return "a tag cannot carry a digest (@sha256:...)"
    return None
