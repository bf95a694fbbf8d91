"""An image's SBOM: CycloneDX 1.6 JSON made with cyclonedx-python-lib from what is in the built image
(in_image/inventory.py, run in a throwaway container), hashed from the locks, validated against the schema
and cross-checked against the locks and the plan (cross_check.py): a mismatch fails the build before any push.

    inventory(client, image_ref) -> dict          what the image holds
    document(target, plan, inventory, image_id, locked) -> Bom
    serialize(bom) -> str; validate(text)         JSON, strictly schema-valid or one-line UserError
    cross_check(bom_dict, target, plan, locked) -> list[str]
    generate(client, matrix, plan, image_ref, out_dir, locked=None) -> Path   all of it, written
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from importlib.metadata import version as dist_version
from pathlib import Path

from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from docker.errors import APIError, DockerException, ImageNotFound
from packageurl import PackageURL

from .. import __version__, docker_client, wheelhouse
from ..errors import UserError, write_file
from ..matrix import Matrix, Target
from ..plan import BuildPlan
from . import expect
from .cross_check import P, cross_check  # noqa: F401 - cross_check is part of this module's API

INVENTORY_SCRIPT = Path(__file__).resolve().parent.parent / "in_image" / "inventory.py"
AOT_DISTRIBUTION = "flashinfer-jit-cache"  # flashinfer_aot.DISTRIBUTION
LABEL_PREFIXES = ("io.dsv4-flash.", "org.opencontainers.image.")


def inventory(client, image_ref: str, python: str = "python", timeout: int = 600) -> dict:
    """Run inventory.py with the image's own Python in a throwaway container (no network, no mounts)."""
    try:
        container = client.containers.create(image_ref, command=["-c", INVENTORY_SCRIPT.read_text()],
                                              entrypoint=[python], network_mode="none", working_dir="/")
    except ImageNotFound:
        raise UserError(f"SBOM: image {image_ref} is not in the local Docker daemon") from None
    try:
        container.start()
        code = container.wait(timeout=timeout).get("StatusCode")
        out = container.logs(stdout=True, stderr=False)
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
    except (APIError, DockerException) as exc:
        said = docker_client.said(exc)
        why = f"the image has no {python} on PATH" if "executable file not found" in said else said[:200]
        raise UserError(f"SBOM: the inventory of {image_ref} failed to run: {why}") from None
    finally:
        try:
            container.remove(force=True)
        except (APIError, DockerException):
            pass
    last = next((line.strip() for line in reversed(err.splitlines()) if line.strip()), "no output on stderr")
    if code != 0:
        raise UserError(f"SBOM: the inventory of {image_ref} ({python} in the image) exited {code}: {last[:200]}")
    try:
        return json.loads(out)
    except ValueError as exc:
        raise UserError(f"SBOM: the inventory of {image_ref} is not JSON ({exc}); stderr: {last[:120]}") from None


def _sha(value: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=value)] if value else []


def _props(pairs) -> list[Property]:
    return [Property(name=k, value=str(v)) for k, v in pairs if v is not None]


def _dpkg(pkg: dict, osr: dict) -> Component:
    distro = f"{osr.get('ID', 'debian')}-{osr['VERSION_ID']}" if osr.get("VERSION_ID") else osr.get("VERSION_CODENAME")
    purl = PackageURL(type="deb", namespace=osr.get("ID", "debian"), name=pkg["name"], version=pkg["version"],
                      qualifiers={"arch": pkg["architecture"], **({"distro": distro} if distro else {})})
    return Component(type=ComponentType.LIBRARY, name=pkg["name"], version=pkg["version"], purl=purl,
                     bom_ref=purl.to_string(), properties=_props([
                         (P.KIND, "dpkg"), (P.ARCH, pkg["architecture"]), (P.SOURCE, pkg.get("source")),
                         (P.SOURCE_VERSION, pkg.get("source_version"))]))


def _aot_modules(dist: dict, ref: str) -> list[Component]:
    """The FlashInfer AOT wheel's modules: each <provider>/<module>/<module>.so with its sha256 on disk."""
    files = {f["path"]: f for f in dist.get("files", [])}
    out = []
    for provider in dist.get("providers", []):
        for module in provider.get("modules", []):
            path = f"flashinfer_jit_cache/{provider['directory']}/{module}/{module}.so"
            f = files.get(path, {})
            mismatch = f.get("sha256") and f.get("sha256") != f.get("record_sha256")
            out.append(Component(type=ComponentType.FILE, name=module, bom_ref=f"{ref}/{provider['directory']}/{module}",
                                 hashes=_sha(f.get("sha256")), properties=_props([
                                     (P.KIND, "flashinfer-module"), (P.PATH, path),
                                     (P.CUDA_ARCHS, " ".join(provider.get("cuda_architectures", []))),
                                     (P.RECORD_SHA256, f.get("record_sha256") if mismatch else None)])))
    return out


def _python(dist: dict, locks: dict, allowed: dict, target: Target, plan: BuildPlan) -> Component:
    name, version = dist["name"], dist["version"]
    purl = PackageURL(type="pypi", name=name, version=version)
    ref = purl.to_string()
    match = next((i for i in locks.get(name, []) if expect.same_version(i.version, version)), None)
    props = [(P.KIND, "python"), (P.INSTALLER, dist.get("installer"))]
    hashes, refs = [], []
    if match:
        # The file is named by the purl's file_name qualifier and its sha256, not by a download URL: the
        # schema's IRI check costs 0.25 s per URL (40 s for cpu's 168 wheels, on every build); the URL each
        # came from is in the provenance's resolvedDependencies.
        hashes = _sha(match.file.sha256)
        purl = PackageURL(type="pypi", name=name, version=version, qualifiers={"file_name": match.file.filename})
        props += [(P.LOCK, match.lock), (P.FILE, match.file.filename)]
    elif name in allowed:
        props.append((P.ORIGIN, allowed[name][1]))
    if name == expect.vllm_name(target):
        props.append((P.VLLM, "sdist" if plan.vllm_source == "sdist" and not match else plan.vllm_source))
        if plan.vllm_source == "sdist" and target.vllm.sdist_url:
            refs.append(ExternalReference(type=ExternalReferenceType.SOURCE_DISTRIBUTION,
                                          url=XsUri(target.vllm.sdist_url), hashes=_sha(target.vllm.sdist_sha256)))
    elif name == "vllm" and target.vllm.dist_alias:
        props.append((P.VLLM, "metadata-alias"))
    aot = name == AOT_DISTRIBUTION  # ours, not PyPI's: no pypi purl
    nested = _aot_modules(dist, ref) if aot else []
    if aot:
        props[0] = (P.KIND, "flashinfer-aot")
    return Component(type=ComponentType.LIBRARY, name=name, version=version, bom_ref=ref, hashes=hashes,
                     purl=None if aot else purl, external_references=refs, properties=_props(props), components=nested)


def _patches(inv: dict, plan: BuildPlan) -> list[Component]:
    applied = "true" if plan.build_args.get("APPLY_PATCHES", "1") == "1" else "false"
    return [Component(type=ComponentType.FILE, name=p["name"], bom_ref=f"patch:{p['name']}", hashes=_sha(p["sha256"]),
                      properties=_props([(P.KIND, "patch"), (P.PATH, f"/opt/dsv4-flash/patches/{p['name']}"),
                                         (P.APPLIED, applied)]))
            for p in inv.get("patches", [])]


def _models(inv: dict, target: Target) -> list[Component]:
    out = []
    for model in inv.get("models", []):
        tiny = target.tiny_model if target.tiny_model and target.tiny_model.path == model["path"] else None
        files = [Component(type=ComponentType.FILE, name=f["path"], bom_ref=f"model:{model['name']}/{f['path']}",
                           hashes=_sha(f["sha256"]), properties=_props([(P.SIZE, f["size"])]))
                 for f in model["files"]]
        out.append(Component(type=ComponentType.MACHINE_LEARNING_MODEL, name=model["name"], bom_ref=f"model:{model['name']}",
                             components=files, properties=_props([
                                 (P.KIND, "model"), (P.PATH, model["path"]),
                                 (P.MODEL_SEED, tiny and tiny.seed), (P.MODEL_NOISE, tiny and tiny.mtp_noise),
                                 (P.MODEL_GENERATOR, tiny and "dsv4_images/in_image/tinymodel.py")])))
    return out


def _base(target: Target, labels: dict, osr: dict) -> Component:
    ref = labels.get("org.opencontainers.image.base.name") or target.base.runtime or target.base_tag
    name, _, digest = ref.partition("@")
    repo, _, tag = name.rpartition(":") if ":" in name.rpartition("/")[2] else (name, "", "")
    return Component(type=ComponentType.CONTAINER, name=repo, version=tag or None, bom_ref=f"base:{ref}",
                     hashes=_sha(digest.removeprefix("sha256:")), properties=_props([
                         (P.KIND, "base"), (P.REF, ref), (P.OS, osr.get("PRETTY_NAME")),
                         *((k, v) for k, v in sorted(labels.items()) if k.startswith("io.dsv4-flash.base."))]))


def document(target: Target, plan: BuildPlan, inventory: dict, image_id: str, locked: list[wheelhouse.LockedFile]) -> Bom:
    """The image's SBOM: deterministic for the same image (serial number from the image id, time SOURCE_DATE_EPOCH)."""
    osr, image = inventory.get("os_release", {}), inventory.get("image", {})
    labels = {k: v for k, v in (image.get("labels") or plan.labels).items() if k.startswith(LABEL_PREFIXES)}
    locks: dict[str, list[expect.Installed]] = {}
    for i in expect.installed(target, plan, locked):
        locks.setdefault(i.file.project, []).append(i)
    allowed = expect.unlocked(target, plan)
    components = [_dpkg(p, osr) for p in inventory.get("dpkg", [])]
    components += [_python(d, locks, allowed, target, plan) for d in inventory.get("python", {}).get("distributions", [])]
    components += [*_patches(inventory, plan), *_models(inventory, target), _base(target, labels, osr)]
    share = {f["path"]: f for f in inventory.get("share", [])}
    module_set = share.get("flashinfer-module-set", {}).get("text", "").strip() or None
    name = (image.get("ref") or plan.tags[0]).partition("@")[0]
    name = name.rpartition(":")[0] if ":" in name.rpartition("/")[2] else name
    root = Component(type=ComponentType.CONTAINER, name=name, version=labels.get("org.opencontainers.image.version"),
                     bom_ref="image", hashes=_sha(image_id.removeprefix("sha256:")),
                     licenses=[LicenseExpression(labels["org.opencontainers.image.licenses"])]
                     if labels.get("org.opencontainers.image.licenses") else [],
                     properties=_props([(P.IMAGE_ID, image_id), (P.TARGET, target.name), (P.VLLM_SOURCE, plan.vllm_source),
                                        (P.MODULE_SET, module_set), (P.PYTHON, inventory.get("python", {}).get("version")),
                                        (P.OS, osr.get("PRETTY_NAME")), *sorted(labels.items()),
                                        *((f"{P.SHARE}{k}", v["sha256"]) for k, v in sorted(share.items()))]))
    tools = [Component(type=ComponentType.APPLICATION, name="dsv4-images", version=__version__, bom_ref="tool:dsv4-images"),
             Component(type=ComponentType.LIBRARY, name="cyclonedx-python-lib", version=dist_version("cyclonedx-python-lib"),
                       bom_ref="tool:cyclonedx-python-lib")]
    created = datetime.fromtimestamp(plan.provenance.epoch, timezone.utc)
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"dsv4-flash:sbom:{image_id}"),
              metadata=BomMetaData(component=root, timestamp=created), components=components)
    bom.metadata.tools.components.update(tools)
    bom.register_dependency(root, components)
    return bom


def serialize(bom: Bom) -> str:
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def validate(text: str) -> None:
    """Strict CycloneDX 1.6 JSON schema validation; the first error as one line naming its path."""
    try:
        error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    except ValueError as exc:
        raise UserError(f"SBOM is not JSON: {exc}") from None
    if error is not None:
        e = error.data
        path = "/" + "/".join(str(p) for p in getattr(e, "absolute_path", [])) if getattr(e, "absolute_path", None) else "/"
        message = " ".join(str(getattr(e, "message", e)).split())
        raise UserError(f"SBOM is not valid CycloneDX 1.6: at {path}: {message[:200]}")


def generate(client, matrix: Matrix, plan: BuildPlan, image_ref: str, out_dir: Path,
             locked: list[wheelhouse.LockedFile] | None = None, python: str = "python") -> Path:
    """Inventory -> document -> JSON -> validate -> cross-check; writes out_dir/sbom-<target>.cdx.json. A
    mismatch is one line naming the first problems (the rejected document is kept beside, for reading)."""
    target = plan.target
    if locked is None:
        locked = expect.locked_files(target, plan.vllm_source)
    found = inventory(client, image_ref, python)
    image = client.images.get(image_ref)
    found["image"] = {"ref": image_ref, "labels": image.labels or {}}
    text = serialize(document(target, plan, found, image.id, locked))
    validate(text)
    problems = cross_check(json.loads(text), target, plan, locked)
    variant = "-unpatched" if plan.build_args.get("APPLY_PATCHES") == "0" else ""  # the test build of the unpatched image
    out = Path(out_dir) / f"sbom-{target.name}{variant}.cdx.json"
    rejected = out.with_name(out.name + ".rejected")
    path = rejected if problems else out
    written = write_file(path, text, f"SBOM: cannot write {path}")
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise UserError(f"SBOM of {image_ref} does not match the locks and the plan: {'; '.join(problems[:5])}{more} "
                        f"(document kept in {written})")
    rejected.unlink(missing_ok=True)
    return written


def summary(path: Path) -> str:
    """`<path> (<n> components, <bytes> bytes)`: n counts nested components too."""
    def count(items):
        return sum(1 + count(c.get("components", [])) for c in items)
    doc = json.loads(path.read_text())
    return f"{path} ({count(doc.get('components', []))} components, {path.stat().st_size} bytes)"
