"""`pip check` for a lock without installing it: are the pinned versions consistent with one another?

uv resolves the lock's own pins again (`name==version` each, for the lock's Python and platform, reading
every package's metadata from the index; no wheel is downloaded). A pinned version that some package's
requirement excludes makes the resolution fail, naming both, as `pip check` would in the image; a package
the pins need but the lock lacks shows up as an extra pin. The runtime lock is checked together with a
wheel locked on its own (vLLM's requirements must hold against the runtime lock, as in the image).
A requirement the target knowingly breaks (`vllm.accepted_unmet`, each also in `vllm.overrides`) is
overridden again; nothing else is.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from . import REPO_ROOT
from .locks import _uv
from .matrix import Target
from .wheelhouse import parse_lock


def pin_sets(target: Target) -> dict[str, list[str]]:
    """What is installed together: label -> the lock files whose pins must agree."""
    sets = {"runtime": [target.lock_paths["runtime"], *([target.lock_paths["wheel"]] if "wheel" in target.lock_paths else [])]}
    if "build" in target.lock_paths:
        sets["build"] = [target.lock_paths["build"]]
    return sets


def problems(target: Target, rels: list[str], root: Path = REPO_ROOT) -> list[str]:
    """Why these locks would fail `pip check` together (empty: they would pass)."""
    pins = {}
    for rel in rels:
        for req in parse_lock((root / rel).read_text(), rel):
            pins[req.name] = req.version
    accepted = {name.lower() for name in target.vllm.accepted_unmet}
    overrides = [o for o in target.vllm.overrides
                 if re.split(r"[=<>!~;\[ ]", o, maxsplit=1)[0].strip().lower() in accepted]
    with tempfile.TemporaryDirectory(prefix="dsv4-lockcheck-") as tmp:
        inputs = Path(tmp) / "pins.txt"
        inputs.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
        cmd = [_uv(), "pip", "compile", str(inputs), "--no-header", "--no-annotate", "--quiet", "--no-config",
               "--python-version", target.toolchain.python,
               "--python-platform", "x86_64-" + target.toolchain.wheel_platform.removesuffix("_x86_64"),
               "--index-url", "https://pypi.org/simple"]
        if overrides:
            (Path(tmp) / "overrides.txt").write_text("\n".join(overrides) + "\n")
            cmd += ["--override", str(Path(tmp) / "overrides.txt")]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    where = " + ".join(rels)
    if result.returncode != 0:
        cause = " ".join(line.strip() for line in result.stderr.splitlines() if line.strip().startswith(("cause:", "Because", "And")))
        return [f"{where}: {cause or (result.stderr.strip().splitlines() or ['uv failed'])[-1]}"]
    resolved = {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", result.stdout, re.M)}
    out = [f"{where}: lacks {name}=={version}, which a locked package requires"
           for name, version in sorted(resolved.items()) if name not in pins]
    out += [f"{where}: {name} resolves to {resolved[name]}, the lock pins {version}"
            for name, version in sorted(pins.items()) if name in resolved and resolved[name] != version]
    return out
