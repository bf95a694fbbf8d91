"""`dsv4-images check REF`: is the image in the registry what this source builds?

1. Read REF's manifest and config from its registry (registry.py) and take the build's inputs from the
   config's labels: target, source revision, SOURCE_DATE_EPOCH (the created label), how vLLM came in,
   whether the patches were applied, the FlashInfer module set, the source URL (hence the owner).
2. Refuse in one line unless this checkout is that revision and clean; plan the build from the labels
   and refuse when the plan's labels differ from the image's (then this source does not name the
   inputs the image records: another matrix, lock or patch under the same revision is impossible, so
   it means the labels were edited).
3. Rebuild without the layer cache or BuildKit's cache mounts (--use-cache keeps them), with the
   reproducible rewrite, and compare: the config digest (the image ID) first; if it differs, the
   config's fields and then layer by layer by diff_id, and for each differing layer, its files
   (path, size, sha256, mode, owner, link), read from the registry's compressed blob and from the
   rebuilt layer. IDENTICAL, exit 0, only when the config digests match.
4. List the documents attached to the image (artifacts.py: the referrers API or its tag fallback) and
   verify them: an SBOM must validate and equal the SBOM of the rebuilt image, a provenance's subject
   must be the image's digest and its inputs the labels', a verify receipt must be bound to the digest.
   A document that does not verify makes the exit non-zero too.
"""

from __future__ import annotations

import json
import tarfile
import time
import zlib

from .. import REPO_ROOT, builder, docker_client, plan as plans, provenance, repro, reproducible
from ..errors import UserError, write_file
from ..matrix import Matrix
from . import artifacts, expect, registry, statements

SBOM_TYPE = "application/vnd.cyclonedx+json"
LINUX_AMD64 = {"os": "linux", "architecture": "amd64"}


def image_manifest(repo: registry.Repository, reference: str) -> registry.Manifest:
    """REF's image manifest; from an index, its linux/amd64 entry. A shape that is neither is one line."""
    manifest = repo.manifest(reference)
    body = manifest.json()
    if isinstance(body, dict) and "manifests" in body:
        entries = [m for m in body["manifests"] if isinstance(m, dict) and isinstance(m.get("digest"), str)
                   and isinstance(m.get("platform"), dict)
                   and {k: m["platform"].get(k) for k in LINUX_AMD64} == LINUX_AMD64] \
            if isinstance(body["manifests"], list) else []
        if not entries:
            raise UserError(f"{repo.name}@{manifest.digest[:19]}... is an index without a linux/amd64 image")
        manifest = repo.manifest(entries[0]["digest"])
        body = manifest.json()
    config = body.get("config") if isinstance(body, dict) else None
    if not (isinstance(config, dict) and isinstance(config.get("digest"), str) and isinstance(body.get("layers"), list)
            and all(isinstance(layer, dict) for layer in body["layers"])):
        raise UserError(f"{repo.name}@{manifest.digest[:19]}... is not an image manifest ({manifest.media_type or 'no media type'})")
    return manifest


def image_config(repo: registry.Repository, manifest: registry.Manifest) -> tuple[str, dict, dict[str, str]]:
    """(the config's digest, the config, its labels) of an image_manifest; a config that is not an image's
    JSON, or labels that are not strings, are one line."""
    digest = manifest.json()["config"]["digest"]
    raw = repo.blob(digest)
    what = f"the config {digest[:19]}... of {repo.name}@{manifest.digest[:19]}..."
    try:
        config = json.loads(raw)
    except ValueError:  # and UnicodeDecodeError
        start = " ".join(raw[:60].decode(errors="replace").split())
        raise UserError(f"{what} is not JSON (it starts {start!r})") from None
    inner = config.get("config") if isinstance(config, dict) else None
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    if not isinstance(config, dict) or not isinstance(inner, (dict, type(None))) or not isinstance(labels, (dict, type(None))):
        raise UserError(f"{what} is not an image's configuration (no config.Labels object)")
    labels = labels or {}
    wrong = [k for k, v in labels.items() if not isinstance(v, str)]
    if wrong:
        raise UserError(f"{what} has labels that are not strings: {', '.join(sorted(wrong)[:3])[:160]}")
    return digest, config, labels


def rebuild_plan(m: Matrix, labels: dict[str, str], tag: str, use_cache: bool) -> plans.BuildPlan:
    """The build that made an image with these labels, from this checkout; refusals are one line."""
    if "io.dsv4-flash.target" not in labels:
        raise UserError("the image has no io.dsv4-flash.target label: it was not built by dsv4-images")
    target = m.resolve(labels["io.dsv4-flash.target"])
    revision = labels.get("org.opencontainers.image.revision", "unknown")
    if revision == "unknown" or revision.endswith("-dirty"):
        raise UserError(f"the image was built from {'an unknown revision' if revision == 'unknown' else 'a work tree with uncommitted changes'} "
                        f"({revision}): no checkout can rebuild it")
    here = provenance.current()
    if here.revision.removesuffix("-dirty") != revision:  # first: with changes or without, this is the wrong commit
        raise UserError(f"the image was built from {revision[:12]}, this checkout is at {here.short_revision}: "
                        f"run `git checkout {revision[:12]}` and check again")
    if here.dirty:
        raise UserError(f"this checkout has uncommitted changes ({here.short_revision}): check rebuilds from a clean "
                        "tree; commit or stash them")
    source = labels.get("org.opencontainers.image.source", "")
    if expect.owner_of(m, source) is None:
        raise UserError(f"the image's source label {source!r} is not {m.project.source} for any owner")
    planned = expect.plan_from_labels(m, target, labels, tags=[tag], no_cache=not use_cache, reproducible=True)
    differ = [f"{k}: image {labels.get(k)!r}, this checkout {v!r}" for k, v in sorted(planned.labels.items())
              if labels.get(k) != v]
    if differ:
        raise UserError(f"this checkout plans other inputs than the image's labels record ({len(differ)}): "
                        + "; ".join(d[:160] for d in differ[:3]))
    return planned


def layer_files(stream, media_type: str) -> dict[str, tuple]:
    """Every file of one layer as reproducible.py records it, from an uncompressed or gzip tar stream (closed
    here). A blob that is not such a tar is one line; when its bytes are not the blob's digest either, that
    is the line (the stream is read to its end, where registry.open_blob checks the digest)."""
    if "zstd" in media_type:
        raise UserError(f"layer media type {media_type} (zstd) is not readable here")
    files = {}
    with stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|gz" if "gzip" in media_type else "r|") as tar:
                for member in tar:
                    data = reproducible._HashingReader(tar.extractfile(member)) if member.isreg() else None
                    if data:
                        while data.read(1 << 20):
                            pass
                    files[member.name] = reproducible._entry(member, data)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            while stream.read(1 << 20):  # a digest mismatch says more than the tar error it caused
                pass
            raise UserError(f"a layer ({media_type}) is not a readable tar: {' '.join(str(exc).split())[:160]}") from None
        while stream.read(1 << 20):  # the rest (tar padding, gzip trailer): the blob's digest is checked at its end
            pass
    return files


FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "link", "mtime")


def file_differences(published: dict[str, tuple], rebuilt: dict[str, tuple], limit: int = 20) -> tuple[int, list[str]]:
    """How many files differ, and the first `limit` of them as lines naming what differs."""
    names = sorted(set(published) | set(rebuilt))
    out = []
    for name in names:
        a, b = published.get(name), rebuilt.get(name)
        if a == b:
            continue
        if a is None or b is None:
            entry = a or b
            out.append(f"{name}: only in the {'published' if b is None else 'rebuilt'} layer "
                       f"(size {entry[4]}, sha256 {entry[5][:12] or '-'})")
        else:
            what = [f"{f} {x if f != 'sha256' else x[:12]} != {y if f != 'sha256' else y[:12]}"
                    for f, x, y in zip(FIELDS, a, b) if x != y]
            out.append(f"{name}: {', '.join(what)} (published != rebuilt)")
    return len(out), out[:limit]


def compare(repo, manifest: registry.Manifest, config: dict, rebuilt, emit) -> dict:
    """Layer by layer: which differ, and their files (only the differing layers are read). `rebuilt` is the
    rebuild's reproducible rewrite with its per-file index; its layer digests are the loaded image's diff_ids."""
    rebuilt_ids = [layer.digest for layer in rebuilt.layers]
    rootfs = config.get("rootfs")
    published_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) and isinstance(rootfs.get("diff_ids"), list) else []
    layers_meta = manifest.json()["layers"]
    report = {"layers": [], "config_differences": repro.config_differences(config, rebuilt.config)}
    differing = [i for i in range(max(len(rebuilt_ids), len(published_ids)))
                 if i >= len(rebuilt_ids) or i >= len(published_ids) or rebuilt_ids[i] != published_ids[i]]
    for i in range(max(len(rebuilt_ids), len(published_ids))):
        entry = {"index": i, "published": published_ids[i] if i < len(published_ids) else None,
                 "rebuilt": rebuilt_ids[i] if i < len(rebuilt_ids) else None}
        entry["match"] = i not in differing
        if not entry["match"] and i < len(published_ids) and i < len(rebuilt_ids) and i < len(layers_meta):
            meta = layers_meta[i]
            emit(f"check: reading published layer {i} ({meta['size'] / 1e6:.0f} MB compressed)")
            published = layer_files(repo.open_blob(meta["digest"]), meta["mediaType"])
            entry["files_differing"], entry["differences"] = file_differences(published, rebuilt.layers[i].files)
        report["layers"].append(entry)
    return report


def verify_documents(repo, manifest: registry.Manifest, labels: dict, rebuilt_sbom: dict | None, emit) -> tuple[list[dict], list[str]]:
    """The attached documents, each verified; and the problems found. Whatever the registry holds (a fallback
    tag that is no index, a referrer without a digest, a document of any shape) is a named problem here: this
    runs after the rebuild, whose comparison must not be lost to one unreadable document."""
    from . import sbom  # cyclonedx's schemas load only when an SBOM is there to check
    found, problems = [], []
    try:
        listed = artifacts.referrers(repo, manifest.digest)
    except UserError as exc:
        return [], [f"the attached documents cannot be listed: {exc}"]
    for descriptor in listed:
        kind = descriptor.get("artifactType", "?")
        digest = descriptor.get("digest") if isinstance(descriptor.get("digest"), str) else "no digest"
        entry = {"digest": digest, "artifactType": kind, "annotations": descriptor.get("annotations", {})}
        try:
            body, payload = artifacts.fetch(repo, descriptor, subject_digest=manifest.digest)
            if body.get("artifactType") != kind:  # the manifest is verified by its digest, the listing is not
                raise UserError(f"listed as {str(kind)[:80]}, but its manifest says {str(body.get('artifactType'))[:80]}")
            if kind == SBOM_TYPE:
                entry["kind"] = "sbom"
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    raise UserError("the SBOM is not UTF-8 text") from None
                sbom.validate(text)
                entry["problems"] = sbom_differences(json.loads(text), rebuilt_sbom) if rebuilt_sbom else \
                    ["not compared: the rebuild made no SBOM"]
            elif kind == statements.MEDIA_TYPE:
                body = statements.parse(payload)
                if body["predicateType"] == statements.SLSA_PROVENANCE:
                    entry["kind"] = "provenance"
                    entry["problems"] = statements.provenance_problems(body, manifest.digest, labels)
                elif body["predicateType"] == statements.VERIFY_RECEIPT:
                    entry["kind"] = "verify-receipt"
                    bound = statements.subject_digest(body)
                    entry["problems"] = [] if bound == manifest.digest else [f"bound to {bound[:19]}..., not this image"]
                    entry["summary"] = statements.describe_receipt(body)
                else:
                    entry["kind"], entry["problems"] = "statement", []
                    entry["unverified"] = f"predicate type {str(body['predicateType'])[:80]} is not one check reads"
            else:
                entry["kind"], entry["problems"] = "unknown", []
                entry["unverified"] = f"artifact type {str(kind)[:80]} is not one check reads"
        except UserError as exc:
            entry.setdefault("kind", "unreadable")
            entry["problems"] = [str(exc)]
        found.append(entry)
        problems += [f"{entry['kind']} {entry['digest'][:19]}...: {p}" for p in entry["problems"]]
    return found, problems


def sbom_differences(published: dict, rebuilt: dict, limit: int = 5) -> list[str]:
    """Components (by purl or name, with version and hashes) in one SBOM and not the other."""
    def keyed(doc):
        return {(c.get("purl") or c.get("name"), c.get("version"),
                 tuple(sorted(h.get("content", "") for h in c.get("hashes", [])))) for c in doc.get("components", [])}
    a, b = keyed(published), keyed(rebuilt)
    return ([f"attached SBOM lists {k[0]} {k[1]}, the image does not hold it" for k in sorted(a - b, key=str)[:limit]]
            + [f"the image holds {k[0]} {k[1]}, the attached SBOM does not list it" for k in sorted(b - a, key=str)[:limit]])


def main(m: Matrix, ref: str, emit=print, use_cache: bool = False, keep: bool = False) -> int:
    started = time.monotonic()
    repo, reference = registry.open_reference(ref)
    manifest = image_manifest(repo, reference)
    published_id, config, labels = image_config(repo, manifest)
    emit(f"check: {repo.name}@{manifest.digest} (image {published_id[:19]}...), "
         f"target {labels.get('io.dsv4-flash.target')}, revision {labels.get('org.opencontainers.image.revision', '?')[:12]}")
    tag = f"dsv4-flash-check:{labels.get('io.dsv4-flash.target', 'x')}-{manifest.digest[7:19]}"
    planned = rebuild_plan(m, labels, tag, use_cache)
    client = docker_client.connect()
    if not use_cache:  # as `repro` does: cache mounts would hand the rebuild an earlier build's objects
        client.api.prune_builds(filters={"type": ["exec.cachemount"]})
    emit(f"check: rebuilding {planned.target.name} from {planned.provenance.short_revision} "
         f"({'with' if use_cache else 'without'} the build cache)")
    built = builder.execute(client, m, planned, emit=lambda line: None if line.startswith("#") else emit(line), index=True)
    rebuild_s = time.monotonic() - started
    identical = built.image_id == published_id
    report = {"reference": ref, "repository": repo.name, "manifest_digest": manifest.digest,
              "published_image": published_id, "rebuilt_image": built.image_id, "identical": identical,
              "target": planned.target.name, "revision": planned.provenance.revision}
    if not identical:
        report.update(compare(repo, manifest, config, built.normalized, emit))
    rebuilt_sbom = json.loads(built.sbom.read_text()) if getattr(built, "sbom", None) else None
    report["documents"], problems = verify_documents(repo, manifest, labels, rebuilt_sbom, emit)
    report["seconds"] = {"rebuild": round(rebuild_s, 1), "total": round(time.monotonic() - started, 1)}
    out = REPO_ROOT / "reports" / f"check-{planned.target.name}.json"
    write_file(out, json.dumps(report, indent=2) + "\n", f"cannot write the check report to {out}")
    for line in report.get("config_differences", []):
        emit(f"    config {line}")
    for layer in report.get("layers", []):
        if not layer["match"]:
            emit(f"layer {layer['index']}: DIFFERENT: published {str(layer['published'])[:19]}, rebuilt "
                 f"{str(layer['rebuilt'])[:19]}, {layer.get('files_differing', '?')} files differ")
            for line in layer.get("differences", [])[:10]:
                emit(f"    {line}")
    for doc in report["documents"]:
        verdict = '; '.join(doc['problems']) or (f"not verified: {doc['unverified']}" if doc.get("unverified") else "verified")
        emit(f"attached {doc['kind']} {doc['digest'][:19]}...: {verdict}"
             + (f" ({doc['summary']})" if doc.get("summary") else ""))
    if not report["documents"]:
        emit("attached: nothing (no SBOM, provenance or receipt refers to this image)")
    if not keep:
        try:
            client.images.remove(tag)
        except Exception:  # noqa: BLE001 - in use, or already gone: leave it
            pass
    verdict = "IDENTICAL" if identical else "DIFFERENT"
    emit(f"check: {verdict}: {repo.name}@{manifest.digest[:19]}... "
         f"{'is' if identical else 'is not'} what {planned.provenance.short_revision} builds"
         f"{'; ' + str(len(problems)) + ' attached document(s) do not verify' if problems else ''} "
         f"({report['seconds']['total']:.0f}s; report {out.relative_to(REPO_ROOT)})")
    return 0 if identical and not problems else 1
