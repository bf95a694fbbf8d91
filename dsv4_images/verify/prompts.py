"""The versioned verify prompt set (prompts/v1.json) and its mechanical answer checks."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .corruption import scripts_in

PROMPTS_DIR = Path(__file__).parent / "prompts"
WORKLOADS = ("chat-code", "reasoning", "instructions")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Prompt:
    id: str
    workload: str
    lang: str
    prompt: str
    answer: float | None = None
    check: dict | None = None


def load(version: str = "v1") -> tuple[str, list[Prompt]]:
    path = PROMPTS_DIR / f"{version}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no prompt set {version!r} (have: {', '.join(p.stem for p in PROMPTS_DIR.glob('*.json'))})") from None
    prompts = [Prompt(**p) for p in data["prompts"]]
    for p in prompts:
        if p.workload not in WORKLOADS:
            raise UserError(f"{path.name}: {p.id}: unknown workload {p.workload!r}")
    return data["version"], prompts


def last_number(text: str) -> float | None:
    found = NUMBER.findall(text.replace("$", " ").replace("，", " "))
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _bullets(text: str) -> int:
    return sum(1 for line in text.splitlines() if re.match(r"^\s*(?:[-*•]|\d+[.)])\s+\S", line))


def _json_object(text: str) -> dict | None:
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        return None
    try:
        value = json.loads(m.group(0))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def check_answer(prompt: Prompt, content: str) -> bool | None:
    """True/False when the prompt has a mechanical check, None when it has none."""
    if prompt.answer is not None:
        value = last_number(content)
        return value is not None and abs(value - prompt.answer) <= 1e-6 * max(1.0, abs(prompt.answer))
    if not prompt.check:
        return None
    text, c = content.strip(), prompt.check
    results = []
    if "regex" in c:
        results.append(bool(re.search(c["regex"], text)))
    if "bullets" in c:
        results.append(_bullets(text) == c["bullets"])
    if c.get("lowercase"):
        results.append(bool(text) and not any(ch.isupper() for ch in text))
    if "json_keys" in c:
        obj = _json_object(text)
        results.append(obj is not None and set(c["json_keys"]) <= set(obj))
    if "forbid" in c:
        results.append(c["forbid"] not in text)
    if "ends_with" in c:
        results.append(text.rstrip("*_ \n").endswith(c["ends_with"]))
    for word, n in c.get("min_count", {}).items():
        results.append(len(re.findall(rf"\b{re.escape(word)}\b", text, re.I)) >= n)
    if "max_words" in c:
        results.append(0 < len(text.split()) <= c["max_words"])
    if "max_chars" in c:
        results.append(0 < len(re.sub(r"\s", "", text)) <= c["max_chars"])
    if "script" in c:
        results.append(c["script"] in scripts_in(text))
    return all(results)
