"""The SBOM against the locks and the plan: every departure as one short line (sbom.generate fails on any).

Works on the parsed JSON document, not on the library's objects, so a document read back from disk (or
written by anyone) is checked the same way."""

from __future__ import annotations

from .. import wheelhouse
from ..matrix import Target
from ..plan import BuildPlan
from . import expect


class P:
    """Property names the SBOM uses (CycloneDX properties: name/value pairs)."""
    KIND = "dsv4-flash:kind"            # dpkg, python, flashinfer-aot, flashinfer-module, patch, model, base
    ARCH, SOURCE, SOURCE_VERSION = "dsv4-flash:dpkg:architecture", "dsv4-flash:dpkg:source", "dsv4-flash:dpkg:source-version"
    INSTALLER, LOCK, FILE = "dsv4-flash:python:installer", "dsv4-flash:lock", "dsv4-flash:locked-file"
    ORIGIN = "dsv4-flash:unlocked-because"
    VLLM = "dsv4-flash:vllm"            # wheel, sdist or metadata-alias
    PATH, SIZE, APPLIED = "dsv4-flash:path", "dsv4-flash:size", "dsv4-flash:patch:applied"
    CUDA_ARCHS, RECORD_SHA256 = "dsv4-flash:cuda-architectures", "dsv4-flash:record-sha256-differs"
    MODEL_SEED, MODEL_NOISE, MODEL_GENERATOR = "dsv4-flash:model:seed", "dsv4-flash:model:mtp-noise", "dsv4-flash:model:generator"
    REF, OS = "dsv4-flash:ref", "dsv4-flash:os"
    IMAGE_ID, TARGET, VLLM_SOURCE = "dsv4-flash:image-id", "dsv4-flash:target", "dsv4-flash:vllm-source"
    MODULE_SET, PYTHON, SHARE = "dsv4-flash:flashinfer-module-set", "dsv4-flash:python-version", "dsv4-flash:share-sha256:"


def _props(c: dict) -> dict[str, str]:
    return {p["name"]: p.get("value", "") for p in c.get("properties", [])}


def _sha(c: dict) -> set[str]:
    return {h["content"] for h in c.get("hashes", []) if h.get("alg") == "SHA-256"}


def _short(sha: str) -> str:
    return f"{sha[:12]}…"


def _python(components: list[dict], target: Target, plan: BuildPlan, locked: list[wheelhouse.LockedFile]) -> list[str]:
    problems = []
    dists: dict[str, list[dict]] = {}
    for c in components:
        if _props(c).get(P.KIND) in ("python", "flashinfer-aot"):
            dists.setdefault(c["name"], []).append(c)
    expected = expect.installed(target, plan, locked)
    for i in expected:
        found = dists.get(i.file.project, [])
        same = [c for c in found if expect.same_version(c.get("version", ""), i.version)]
        if not found:
            problems.append(f"{i} is not in the SBOM")
        elif not same:
            problems.append(f"{i} is in the SBOM as {', '.join(c['name'] + '==' + c.get('version', '?') for c in found)}")
        elif not any(i.file.sha256 in _sha(c) for c in same):
            got = sorted(h for c in same for h in _sha(c))
            problems.append(f"{i} has sha256 {', '.join(map(_short, got)) or 'none'} in the SBOM")
    allowed = expect.unlocked(target, plan)
    for name, found in sorted(dists.items()):
        for c in found:
            version = c.get("version", "")
            if any(i.file.project == name and expect.same_version(i.version, version) for i in expected):
                continue
            want = allowed.get(name)
            if want is None:
                problems.append(f"installed distribution {name}=={version} is in no lock")
            elif want[0] is not None and not expect.same_version(want[0], version):
                problems.append(f"installed distribution {name}=={version} is not the {name}=={want[0]} the build adds")
    return problems


def _patches(components: list[dict], target: Target, plan: BuildPlan) -> list[str]:
    problems = []
    found = {c["name"]: c for c in components if _props(c).get(P.KIND) == "patch"}
    pinned = {p.name: p.sha256 for p in target.patches}
    applied = "true" if plan.build_args.get("APPLY_PATCHES", "1") == "1" else "false"
    for name, sha in pinned.items():
        c = found.get(name)
        if c is None:
            problems.append(f"patch {name} (sha256 {_short(sha)}) is not in the SBOM")
        elif sha not in _sha(c):
            problems.append(f"patch {name} has sha256 {', '.join(map(_short, _sha(c))) or 'none'} in the SBOM, "
                            f"matrix.toml pins {_short(sha)}")
        elif _props(c).get(P.APPLIED) != applied:
            problems.append(f"patch {name} is marked applied={_props(c).get(P.APPLIED)}, the plan says "
                            f"APPLY_PATCHES={plan.build_args.get('APPLY_PATCHES')}")
    problems += [f"patch {name} in the image is not one of {target.name}'s patches" for name in sorted(set(found) - set(pinned))]
    return problems


def _flashinfer(components: list[dict], root: dict, target: Target, plan: BuildPlan) -> list[str]:
    if not target.flashinfer:
        return []
    aot = [c for c in components if _props(c).get(P.KIND) == "flashinfer-aot"]
    if not aot:
        return ["the FlashInfer AOT wheel flashinfer-jit-cache (or its modules) is not in the SBOM"]
    problems = []
    modules = {m["name"]: m for c in aot for m in c.get("components", [])}
    wanted = plan.build_args.get("FLASHINFER_MODULE_SET", "full")
    for name in expect.module_set(target, plan):
        if name not in modules or not _sha(modules[name]):
            problems.append(f"FlashInfer module {name} (set {wanted}) is not in the SBOM's flashinfer-jit-cache")
    problems += [f"FlashInfer module {n}'s .so differs from what its wheel's RECORD says"
                 for n, m in sorted(modules.items()) if P.RECORD_SHA256 in _props(m)]
    if _props(root).get(P.MODULE_SET) != wanted:
        problems.append(f"the image's FlashInfer module set is {_props(root).get(P.MODULE_SET)}, the plan says {wanted}")
    return problems


def cross_check(bom: dict, target: Target, plan: BuildPlan, locked: list[wheelhouse.LockedFile]) -> list[str]:
    """What in the SBOM departs from the locks and the plan, one short line each (empty: it matches)."""
    components = bom.get("components", [])
    root = bom.get("metadata", {}).get("component", {})
    kinds = [_props(c).get(P.KIND) for c in components]
    problems = [] if "dpkg" in kinds else ["no Debian packages in the SBOM (the image's dpkg database is empty or unread)"]
    problems += _python(components, target, plan, locked)
    vllm = [c for c in components if _props(c).get(P.VLLM) in ("wheel", "sdist")]
    if not any(expect.same_version(c.get("version", ""), target.vllm.version) for c in vllm):
        problems.append(f"vLLM {target.vllm.package or 'vllm'}=={target.vllm.version} is not in the SBOM "
                        f"(found: {', '.join(c['name'] + '==' + c.get('version', '?') for c in vllm) or 'none'})")
    problems += _patches(components, target, plan)
    if target.tiny_model:
        model = [c for c in components if _props(c).get(P.KIND) == "model" and _props(c).get(P.PATH) == target.tiny_model.path]
        if not model or not model[0].get("components") or not all(_sha(f) for f in model[0]["components"]):
            problems.append(f"the baked model {target.tiny_model.path} is not in the SBOM (or has files without sha256)")
    problems += _flashinfer(components, root, target, plan)
    labels = _props(root)
    for key, value in sorted(plan.labels.items()):
        if labels.get(key) != value:
            problems.append(f"the image's label {key} is {labels.get(key, 'missing')!r}, the plan says {value!r}")
    return problems
