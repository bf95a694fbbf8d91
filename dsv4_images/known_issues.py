"""known_issues.toml: known upstream issues, what the pinned sources carry and the image's answer.

Validated on load (one line naming the first bad key), rendered into the README between markers by
`build.py render`, and judged by `build.py prove` against what vLLM's own selection functions report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from . import REPO_ROOT
from .errors import UserError
from .matrix import read_toml

PATH = REPO_ROOT / "known_issues.toml"
BEGIN, END = "<!-- known-issues:begin (generated from known_issues.toml by build.py render) -->", "<!-- known-issues:end -->"
# What prove's worker reports per compute capability (worker/prove_worker.py: picks()).
REPORTS = ("nvfp4_moe_backend", "mtp_moe_backend", "draft_sample_method", "rejection_sample_method",
           "cudagraph_mode", "draft_cudagraph_mode", "mtp_with_dcp", "tool_strict_level", "flashinfer_autotune")
Text = Annotated[str, StringConstraints(min_length=1)]


class _Table(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Prove(_Table):
    report: Literal[REPORTS]  # type: ignore[valid-type]
    capabilities: list[Text] = []  # empty: every capability of the target
    broken: list[Text] = []
    allowed: list[Text] = []

    @model_validator(mode="after")
    def _one_rule(self):
        if bool(self.broken) == bool(self.allowed):
            raise ValueError("give exactly one of broken or allowed")
        return self

    def hit(self, value) -> bool:
        """True when the reported value is one the table says is broken."""
        shown = str(value)
        return shown in self.broken if self.broken else shown not in self.allowed


class Issue(_Table):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    reports: list[Text] = Field(min_length=1)
    symptom: Text
    affected: Text
    fixed: Literal["yes", "no", "partly", "option", "unknown", "n/a"]
    evidence: list[Text] = Field(min_length=1)
    answer: Literal["patch", "serve-default", "steering", "refused", "none"]
    targets: list[Text] = Field(min_length=1)
    action: Text
    test: Text | None = None
    prove: Prove | None = None

    @model_validator(mode="after")
    def _test_unless_none(self):
        if self.answer != "none" and not self.test:
            raise ValueError(f"answer {self.answer!r} needs a test that fails without it")
        return self


class Table(_Table):
    schema_: Literal[1] = Field(alias="schema")
    pins: dict[str, Text]
    issues: list[Issue] = Field(min_length=1)


def load(path: Path = PATH) -> Table:
    raw = read_toml(path)
    try:
        table = Table.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        what = {"extra_forbidden": "unknown key", "missing": "missing"}.get(err["type"], err["msg"])
        raise UserError(f"{path.name}: {where}: {what}") from None
    seen = set()
    for i, issue in enumerate(table.issues):
        if issue.id in seen:
            raise UserError(f"{path.name}: issues[{i}].id: {issue.id!r} appears twice")
        seen.add(issue.id)
    return table


def judged(table: Table, target: str, capability: str) -> list[Issue]:
    """The rows prove checks on this target and capability."""
    return [i for i in table.issues if i.prove and target in i.targets
            and (not i.prove.capabilities or capability in i.prove.capabilities)]


def markdown(table: Table) -> str:
    """The README section: one row per issue."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    pins = ", ".join(f"{k} {v}" for k, v in table.pins.items())
    lines = [BEGIN, "", f"Pinned: {pins}. Evidence is file:line in the pinned packages; `prove` checks the rows "
             "marked with a report on every stated compute capability and fails when one is hit.", "",
             "| id | reports | symptom | fixed in the pins | evidence | image's answer | checked by |",
             "|---|---|---|---|---|---|---|"]
    for i in table.issues:
        checked = [f"`{i.test}`"] if i.test else []
        if i.prove:
            rule = f"not {'/'.join(i.prove.allowed)}" if i.prove.allowed else "/".join(i.prove.broken)
            where = f" on {'/'.join(i.prove.capabilities)}" if i.prove.capabilities else ""
            checked.append(f"prove `known.{i.id}`: FAIL if {i.prove.report} is {rule}{where}")
        lines.append("| " + " | ".join(cell(x) for x in [
            f"`{i.id}` ({', '.join(i.targets)})", ", ".join(i.reports), i.symptom, f"{i.fixed}: {i.affected}",
            "; ".join(i.evidence), f"**{i.answer}**: {i.action}", "; ".join(checked) or "-"]) + " |")
    return "\n".join(lines + ["", END])


def readme_with_table(readme: str, table: Table) -> str:
    """The README with the section between the markers replaced (the markers must be there, once each)."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise UserError(f"README.md: expected the markers {BEGIN!r} ... {END!r} once each, in order")
    head, rest = readme.split(BEGIN, 1)
    return head + markdown(table) + rest.split(END, 1)[1]
