"""Find every network fetch in a Dockerfile that is not pinned by a hash checked in the same step.

A Dockerfile instruction (continuation lines joined, comments dropped) is a finding when it
  - downloads with curl or wget and the same RUN neither names a sha256 (64 hex) nor runs sha256sum;
  - clones or fetches with git (a ref is never a pin here: sources come as hash-checked archives);
  - installs or downloads with pip or uv pip without --require-hashes (or --no-index: local files only);
  - ADDs a URL without --checksum;
  - builds (setup.py, cmake, pip wheel) in a stage whose ENV does not disable git and downloads
    (GIT_ALLOW_PROTOCOL="none" and an unreachable https_proxy): CMake's FetchContent would fetch
    whatever is not handed over, unpinned.
apt-get is not a finding: packages come from the base's suite, checked by apt's signatures.
"""

from __future__ import annotations

import re

HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
GUARD = ('GIT_ALLOW_PROTOCOL="none"', 'https_proxy="http://127.0.0.1:9"')


def instructions(text: str) -> list[tuple[int, str, str, str]]:
    """(line number, keyword, arguments, stage) for every instruction."""
    out, stage, buf, start = [], "", [], 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        buf.append(line[:-1] if line.endswith("\\") else line)
        if line.endswith("\\"):
            continue
        joined = " ".join(" ".join(buf).split())
        buf = []
        keyword, _, args = joined.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.I)
            stage = m.group(1) if m else args.split()[0]
        out.append((start, keyword, args, stage))
    return out


def findings(text: str, name: str = "Dockerfile") -> list[str]:
    found = []
    insts = instructions(text)
    guarded = {stage for _, kw, args, stage in insts if kw == "ENV" and all(g in args for g in GUARD)}
    for n, keyword, args, stage in insts:
        where = f"{name}:{n} ({stage})"
        if keyword == "ADD" and re.search(r"https?://", args) and "--checksum=sha256:" not in args:
            found.append(f"{where}: ADD of a URL without --checksum")
        if keyword != "RUN":
            continue
        if re.search(r"(?:^|&&|\|\||;|\||\$\(|\()\s*(curl|wget)\b", args) and not (HEX64.search(args) and "sha256sum" in args):
            found.append(f"{where}: download without a sha256 check in the same step")
        if re.search(r"\bgit\s+(clone|fetch|pull|submodule|ls-remote)\b", args):
            found.append(f"{where}: git fetches a moving ref")
        for m in re.finditer(r"\b(?:uv\s+)?pip3?\s+(install|download|wheel)\b(.*?)(?=&&|\|\||;|$)", args):
            if "--require-hashes" not in m.group(2) and "--no-index" not in m.group(2):
                found.append(f"{where}: pip {m.group(1)} without --require-hashes")
        if re.search(r"\bsetup\.py\b|\bcmake\s|\bpip3?\s+wheel\b", args) and stage not in guarded:
            found.append(f"{where}: a build in a stage where git and downloads are not disabled (FetchContent would fetch)")
    return found
