"""prove's report: named PASS/FAIL lines (INFO lines carry facts and never fail), seconds per step,
a table for the terminal and the same as JSON."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

STATUSES = ("PASS", "FAIL", "INFO")


@dataclass(frozen=True)
class Line:
    name: str
    status: str
    detail: str
    step: str = ""


@dataclass
class Report:
    target: str
    lines: list[Line] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    emit: object = None  # callable(str) for progress, or None
    _step: str = ""

    def add(self, name: str, ok: bool | None, detail: str) -> Line:
        status = "INFO" if ok is None else ("PASS" if ok else "FAIL")
        line = Line(name, status, " ".join(str(detail).split()), self._step)
        self.lines.append(line)
        if self.emit:
            self.emit(f"  {status:4}  {name}: {line.detail}")
        return line

    @contextmanager
    def step(self, name: str):
        """Times a step; an exception inside it becomes that step's FAIL line."""
        self._step, started = name, time.monotonic()
        if self.emit:
            self.emit(f"[{self.target}] {name} ...")
        try:
            yield self
        except StepFailed as exc:
            self.add(f"{name}", False, str(exc))
        finally:
            self.steps[name] = round(time.monotonic() - started, 1)
            self._step = ""

    @property
    def ok(self) -> bool:
        return all(line.status != "FAIL" for line in self.lines) and bool(self.lines)

    def failed(self) -> list[Line]:
        return [line for line in self.lines if line.status == "FAIL"]

    def table(self) -> str:
        width = max((len(line.name) for line in self.lines), default=10)
        out = [f"prove {self.target}: {'PASS' if self.ok else 'FAIL'} "
               f"({sum(1 for x in self.lines if x.status == 'PASS')} pass, {len(self.failed())} fail, "
               f"{sum(1 for x in self.lines if x.status == 'INFO')} info)"]
        for line in self.lines:
            out.append(f"{line.status:4}  {line.name:<{width}}  {line.detail}")
        out.append("seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in self.steps.items())
                   + f"; total {sum(self.steps.values()):.1f}")
        return "\n".join(out)

    def as_json(self) -> str:
        return json.dumps({"target": self.target, "ok": self.ok, "steps_seconds": self.steps,
                           "total_seconds": round(sum(self.steps.values()), 1),
                           "lines": [asdict(line) for line in self.lines], "facts": self.facts},
                          indent=2, sort_keys=True, default=str) + "\n"


class StepFailed(Exception):
    """A step that cannot go on: recorded as one FAIL line named after the step."""
