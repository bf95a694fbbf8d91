"""What a build of one target will do: Dockerfile, build context, build arguments, tags and labels.

A plan needs no daemon (`build.py build --dry-run` prints it; the CI workflow reads it as JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import references
from .errors import UserError
from .matrix import Matrix, Target
from .provenance import Provenance


@dataclass(frozen=True)
class BuildPlan:
    target: Target
    provenance: Provenance
    build_args: dict[str, str]
    tags: list[str]
    labels: dict[str, str]
    stage: str = "image"
    push: bool = False
    no_cache: bool = False
    reproducible: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def dockerfile(self) -> str:
        return self.target.dockerfile

    @property
    def context_files(self) -> list[str]:
        return self.target.context_files()

    def as_json(self) -> str:
        """The plan for machines (the CI workflow reads build args, tags and labels from it)."""
        return json.dumps({"target": self.target.name, "dockerfile": self.dockerfile, "stage": self.stage,
                           "context": self.context_files, "build_args": self.build_args, "tags": self.tags,
                           "labels": self.labels, "push": self.push, "reproducible": self.reproducible},
                          indent=2, sort_keys=True)

    def describe(self) -> str:
        lines = [f"target:      {self.target.name} ({self.target.description})",
                 f"dockerfile:  {self.dockerfile} (stage {self.stage})",
                 f"context:     {len(self.context_files)} files: {', '.join(self.context_files)}",
                 "build args:"] + [f"  {k}={v}" for k, v in sorted(self.build_args.items())]
        lines += ["tags:"] + [f"  {t}" for t in self.tags]
        lines += ["labels:"] + [f"  {k}={v}" for k, v in sorted(self.labels.items())]
        lines += [f"push:        {'yes' if self.push else 'no'}", f"no cache:    {'yes' if self.no_cache else 'no'}",
                  f"reproducible: {'yes (timestamps rewritten to SOURCE_DATE_EPOCH)' if self.reproducible else 'no'}"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def make(matrix: Matrix, target: Target, provenance: Provenance, *, image: str | None = None, owner: str | None = None,
         tags: list[str] | None = None, push: bool = False, no_cache: bool = False, unpatched: bool = False,
         reproducible: bool | None = None) -> BuildPlan:
    """The plan for `target`. Pushed images are always made reproducible. Every tag is one Docker
    accepts (references.py), whatever the image name, owner or tags it was made from."""
    image = image or matrix.image_name(owner)
    suffix = "-unpatched" if unpatched else ""
    if tags:
        refs = [t if ("/" in t or ":" in t) else f"{image}:{t}" for t in tags]
    else:
        refs = [f"{image}:{t}{suffix}" for t in target.tags] + [
            f"{image}:{target.version_tag}{suffix}", f"{image}:{provenance.short_revision}-{target.name}{suffix}"]
    build_args = {"BUILD_CREATED": provenance.created, "VCS_REF": provenance.revision,
                  "IMAGE_VERSION": f"{target.version_tag}-{provenance.short_revision}",
                  "SOURCE_URL": matrix.source_url(owner), "APPLY_PATCHES": "0" if unpatched else "1",
                  "SOURCE_DATE_EPOCH": str(provenance.epoch)}
    labels = dict(target.image_labels())
    labels.update({"org.opencontainers.image.revision": provenance.revision,
                   "org.opencontainers.image.created": provenance.created,
                   "org.opencontainers.image.version": build_args["IMAGE_VERSION"],
                   "org.opencontainers.image.source": build_args["SOURCE_URL"],
                   "io.dsv4-flash.patches.applied": build_args["APPLY_PATCHES"]})
    for ref in refs:
        problem = references.tag_target_problem(ref)
        if problem:
            source = "--tag" if tags else "the image name (--image, --owner, $DSV4_OWNER or matrix.toml's project.image)"
            raise UserError(f"{ref[:80]!r} is not a tag Docker accepts ({problem}); check {source}")
    notes = ["the work tree has uncommitted changes: the revision label says -dirty"] if provenance.dirty else []
    return BuildPlan(target, provenance, build_args, refs, labels, push=push, no_cache=no_cache,
                     reproducible=push if reproducible is None else reproducible, notes=notes)
