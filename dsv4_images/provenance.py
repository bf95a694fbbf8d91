"""What a build records about where it came from: the git revision and SOURCE_DATE_EPOCH.

This is the one place SOURCE_DATE_EPOCH is read and parsed; everything downstream gets the
`Provenance` (an int epoch and the strings derived from it)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone

from . import REPO_ROOT
from .errors import UserError

# An OCI `created` timestamp is RFC 3339; Python's datetime (and Go's time) stop at year 9999.
MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def parse_epoch(value: str, name: str = "SOURCE_DATE_EPOCH") -> int:
    """Seconds since 1970 as the reproducible-builds spec has them: ASCII digits only (no sign, spaces,
    fraction or Unicode digits), and at most what an OCI `created` timestamp holds."""
    if not value.isascii() or not value.isdigit():
        raise UserError(f"{name}={value[:40]!r}{'...' if len(value) > 40 else ''} is not a non-negative integer "
                        "number of seconds (ASCII digits only, no spaces or sign)")
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(MAX_EPOCH)) or int(digits) > MAX_EPOCH:
        raise UserError(f"{name}={value[:40]!r}{'...' if len(value) > 40 else ''} is beyond what an OCI timestamp "
                        f"holds (at most {MAX_EPOCH}, 9999-12-31)")
    return int(digits)


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Provenance:
    revision: str          # full commit, "-dirty" when tracked files have changes, or "unknown"
    short_revision: str
    epoch: int             # SOURCE_DATE_EPOCH

    @property
    def created(self) -> str:
        return rfc3339(self.epoch)

    @property
    def dirty(self) -> bool:
        return self.revision.endswith("-dirty")


def current() -> Provenance:
    """SOURCE_DATE_EPOCH from the environment (set means set: empty is refused), else the last commit's
    time, else 0; and the revision."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        value = _git("log", "-1", "--format=%ct") or "0"
    epoch = parse_epoch(value)
    full = _git("rev-parse", "HEAD") or "unknown"
    short = full[:12] if full != "unknown" else "unknown"
    if full != "unknown" and _git("status", "--porcelain", "--untracked-files=no"):
        full, short = full + "-dirty", short + "-dirty"
    return Provenance(full, short, epoch)
