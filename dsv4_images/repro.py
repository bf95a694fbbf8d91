"""`build.py repro --arch ARCH`: build twice from a clean state and compare the results bit for bit.

Each build runs without the layer cache, is normalized for SOURCE_DATE_EPOCH (reproducible.py)
and scanned file by file. The report says whether the image config digest and every layer digest
match and, where a layer differs, which files differ and how.
"""

from __future__ import annotations

import json
import time

from . import REPO_ROOT, base, builder, docker_client, plan, provenance, reproducible
from .matrix import Matrix, Target


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the image config fields that differ (layer ids are compared layer by layer)."""
    out = []
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        if path == "rootfs":
            continue
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += config_differences(x, y, path + ".")
        elif x != y:
            out.append(f"{path}: {x!r} != {y!r}"[:300])
    return out


def compare(a: reproducible.NormalizedImage, b: reproducible.NormalizedImage, limit: int = 40) -> dict:
    layers = []
    for i, (x, y) in enumerate(zip(a.layers, b.layers)):
        entry = {"index": i, "a": x.digest, "b": y.digest, "match": x.digest == y.digest}
        if not entry["match"]:
            names = sorted(set(x.files) | set(y.files))
            differ = [n for n in names if x.files.get(n) != y.files.get(n)]
            entry["files_differing"] = len(differ)
            entry["differences"] = [{"path": n, "a": x.files.get(n), "b": y.files.get(n)} for n in differ[:limit]]
            if not differ and list(x.files) != list(y.files):
                entry["differences"] = [{"path": "(file order differs)"}]
        layers.append(entry)
    return {"config_digest": {"a": a.config_digest, "b": b.config_digest, "match": a.config_digest == b.config_digest},
            "config_differences": config_differences(a.config, b.config),
            "layer_count": {"a": len(a.layers), "b": len(b.layers)}, "layers": layers,
            "identical": a.config_digest == b.config_digest and len(a.layers) == len(b.layers)
            and all(layer["match"] for layer in layers)}


def default_module_set(target: Target) -> str | None:
    """CI's FlashInfer module set where the target has one: the full set compiles for hours."""
    if not target.flashinfer:
        return None
    return "ci" if "ci" in target.flashinfer.module_sets else "full"


def build_and_scan(client, matrix: Matrix, target: Target, tag: str, emit,
                   flashinfer_modules: str | None = None) -> tuple[reproducible.NormalizedImage, float]:
    build = plan.make(matrix, target, provenance.current(), image="dsv4-flash-repro", tags=[tag], no_cache=True,
                      flashinfer_modules=flashinfer_modules)
    # A clean build: --no-cache skips the layer cache but keeps BuildKit's cache mounts (pip's, and the
    # FlashInfer AOT ninja directory, which would hand the second build the first one's objects).
    client.api.prune_builds(filters={"type": ["exec.cachemount"]})
    started = time.monotonic()
    builder.execute(client, matrix, build, emit=lambda line: None if line.startswith("#") else emit(line))
    seconds = time.monotonic() - started
    return reproducible.normalize(client, build.tags[0], build.provenance.epoch, base.base_epoch(target), index=True,
                                  progress=emit), seconds


def main(matrix: Matrix, target: Target, emit=print, first: reproducible.NormalizedImage | None = None,
         flashinfer_modules: str | None = None) -> int:
    client = docker_client.connect()
    modules = flashinfer_modules or default_module_set(target)
    if modules:
        emit(f"repro: FlashInfer module set {modules}" + (" (the full set compiles for hours: --flashinfer-modules full)"
                                                          if modules != "full" else ""))
    results, seconds = [], []
    for tag in ("a", "b"):
        emit(f"repro: build {tag} of {target.name} without the layer cache or BuildKit's cache mounts")
        image, s = build_and_scan(client, matrix, target, f"{target.name}-{tag}", emit, modules)
        results.append(image)
        seconds.append(round(s, 1))
    report = compare(*results)
    report.update({"target": target.name, "build_seconds": seconds, "flashinfer_module_set": modules})
    out = REPO_ROOT / "reports" / f"repro-{target.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    emit(f"config digest: a {report['config_digest']['a']}  b {report['config_digest']['b']}")
    for line in report["config_differences"]:
        emit(f"    config {line}")
    for layer in report["layers"]:
        mark = "same" if layer["match"] else f"DIFFERENT ({layer.get('files_differing', '?')} files)"
        emit(f"layer {layer['index']:>2}: {layer['a'][:19]} {layer['b'][:19]} {mark}")
        for d in layer.get("differences", [])[:10]:
            emit(f"    {d['path']}")
    emit(f"repro: {'IDENTICAL' if report['identical'] else 'NOT reproducible'} (builds took {seconds[0]}s and {seconds[1]}s); "
         f"report {out.relative_to(REPO_ROOT)}")
    return 0 if report["identical"] else 1
