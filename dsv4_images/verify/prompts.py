"""The versioned verify prompt sets (prompts/v1.json, prompts/v2.json) and their answer checks.

v2 (the default) gives every prompt a verifiable expectation (see verify.answers for the keys):
code prompts carry asserts the function must pass, reasoning prompts a number, instruction
prompts a format. v1 stays loadable for comparing old reports; its code prompts only check that
the function is defined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from . import answers
from .answers import final_numbers
from .detectors.scripts import scripts_in  # noqa: F401  (kept importable from here)

PROMPTS_DIR = Path(__file__).parent / "prompts"
DEFAULT_VERSION = "v2"
WORKLOADS = ("chat-code", "reasoning", "instructions")


@dataclass(frozen=True)
class Prompt:
    id: str
    workload: str
    lang: str
    prompt: str
    answer: float | None = None
    check: dict | None = None

    @property
    def expected(self) -> dict:
        """The prompt's answer check in verify.answers' keys (empty: nothing to check)."""
        spec = dict(self.check or {})
        if self.answer is not None:
            spec["number"] = self.answer
        return spec


def load(version: str = DEFAULT_VERSION) -> tuple[str, list[Prompt]]:
    path = PROMPTS_DIR / f"{version}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        have = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.json")))
        raise UserError(f"no prompt set {version!r} (have: {have})") from None
    except ValueError as exc:
        raise UserError(f"{path.name}: not JSON ({exc})") from None
    try:
        prompts = [Prompt(**p) for p in data["prompts"]]
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path.name}: malformed prompt entry ({exc})") from None
    for p in prompts:
        if p.workload not in WORKLOADS:
            raise UserError(f"{path.name}: {p.id}: unknown workload {p.workload!r}")
        try:
            answers.validate(p.expected)
        except ValueError as exc:
            raise UserError(f"{path.name}: {p.id}: {exc}") from None
        if data.get("every_prompt_checked") and not p.expected:
            raise UserError(f"{path.name}: {p.id}: no answer check")
    return data["version"], prompts


def last_number(text: str) -> float | None:
    """The last number in the text (kept for callers of v1's helper)."""
    found = final_numbers(text)
    return found[0] if found else None


def check_answer(prompt: Prompt, content: str) -> bool | None:
    """True/False when the prompt has an answer check, None when it has none."""
    spec = prompt.expected
    if not spec:
        return None
    return answers.check(spec, content).passed


def why_wrong(prompt: Prompt, content: str) -> str:
    """What the answer check found ("" when it passed or there is none)."""
    spec = prompt.expected
    return answers.check(spec, content).detail if spec else ""
