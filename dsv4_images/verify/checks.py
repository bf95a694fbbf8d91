"""Named check lines: one per cause, each PASS, FAIL, CANNOT JUDGE or SKIPPED, with its figures.

The verdict passes only when nothing FAILed and nothing could not be judged: a check that could
not be made never counts as a pass. SKIPPED is only for what was not asked for (no --baseline-url)
or what the server does not offer (no logprobs); the line says which.
Exit codes: 0 pass, 1 a FAIL, 3 no FAIL but something could not be judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PASS, FAIL, CANNOT, SKIPPED = "PASS", "FAIL", "CANNOT JUDGE", "SKIPPED"
EXIT_FAIL, EXIT_CANNOT = 1, 3


@dataclass
class Check:
    name: str
    status: str
    detail: str
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "figures": self.figures}

    def line(self) -> str:
        return f"{self.status:<13}{self.name:<28}{self.detail}"


def status_of(checks: list[Check]) -> str:
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else CANNOT if CANNOT in statuses else PASS


def verdict(checks: list[Check]) -> dict:
    """{"passed", "failures"}: the FAIL details in order, then each "cannot judge" as 'cannot judge: name: detail'."""
    failures = [c.detail for c in checks if c.status == FAIL]
    failures += [f"cannot judge: {c.name}: {c.detail}" for c in checks if c.status == CANNOT]
    return {"passed": not failures, "failures": failures}


def exit_code(checks: list[Check]) -> int:
    return {FAIL: EXIT_FAIL, CANNOT: EXIT_CANNOT}.get(status_of(checks), 0)


def summary(checks: list[Check]) -> str:
    """One line for stderr when the verdict is not PASS."""
    status = status_of(checks)
    named = [c.name for c in checks if c.status == status]
    return f"verify: {status}: {', '.join(named)}"
