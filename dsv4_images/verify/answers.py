"""Answer checks: does the answer meet the prompt's verifiable expectation?

No rule about what corruption looks like is needed here: each prompt carries what a right answer
must satisfy, so a fluent but wrong answer, or a constant one ("OK." to everything), fails. A check
is a dict of one or more of these keys (all must hold):

    number       the final answer is this number: the last number in the answer, a \\boxed{} or the
                 last **bold** value, the number right after the last "answer"/"答案"/"result"/
                 "total"/"is"/"="/":" marker, or the first number of the last sentence holding one
                 (thousands separators, a Unicode minus, a trailing % and simple fractions are read)
    rel_tol      with number: the relative tolerance (default 1e-6), for answers rounded by the prompt
    python       {"function": name, "asserts": [...]}: the answer's Python (its python-fenced blocks,
                 else the whole answer) defines `name` and passes every assert, run in verify.sandbox
    json_keys    the answer holds a JSON object (fenced or bare) with exactly these top-level keys (a
                 prompt that names the keys asks for those; an extra key is a format fault)
    json_has_keys  ... with at least these top-level keys (others may come along)
    json_values  ... whose values equal these (strings compared case-insensitively)
    bullets      exactly this many Markdown list items at the outermost level
    max_words    1..N words (a CJK character counts as one word, as word processors count them)
    min_words    at least N words
    max_chars    1..N characters, whitespace not counted
    regex        re.search finds the pattern
    contains     every one of these strings appears (case-insensitive)
    lowercase    no upper-case letter;  forbid: this string never appears
    ends_with    the answer ends with this text (trailing Markdown emphasis ignored)
    min_count    {word: n}: each word appears at least n times
    script       the answer uses this script (e.g. "han")

`expected` items in the corruption evaluation format use the same keys.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import lru_cache

from . import sandbox
from .detectors import markdown
from .detectors.scripts import CJK, script_of, scripts_in

KEYS = ("number", "rel_tol", "python", "json_keys", "json_has_keys", "json_values", "bullets", "max_words", "min_words",
        "max_chars", "regex", "contains", "lowercase", "forbid", "ends_with", "min_count", "script")
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?![\d.]))?%?")
MARKER = re.compile(r"answer|result|total|答案|结果|共|=|:|：|\bis\b", re.I)
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
BOLD = re.compile(r"\*\*([^*\n]{1,40})\*\*")
BULLET = re.compile(r"^(\s*)(?:[-*+•]|\d+[.)、])\s+\S")


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str = ""


def _value(token: str) -> float | None:
    token = token.replace(",", "").replace(" ", "")
    percent = token.endswith("%")
    token = token.rstrip("%")
    try:
        if "/" in token:
            a, b = token.split("/")
            return float(a) / float(b)
        return float(token)
    except (ValueError, ZeroDivisionError):
        return None


def numbers(text: str) -> list[float]:
    text = text.replace("−", "-").replace("，", " ").replace("$", " ")
    return [v for v in (_value(m.group(0)) for m in NUMBER.finditer(text)) if v is not None]


def final_numbers(text: str) -> list[float]:
    """The candidates for the answer's final number (see the module docstring)."""
    found = numbers(text)
    candidates = found[-1:]
    for boxed in BOXED.findall(text) + BOLD.findall(text)[-1:]:
        candidates += numbers(boxed)[-1:]
    markers = list(MARKER.finditer(text))
    if markers:
        candidates += numbers(text[markers[-1].end():])[:1]
    sentences = [s for s in re.split(r"(?<=[.!?。！？])\s+|\n+", text) if numbers(s)]
    if sentences:
        candidates += numbers(sentences[-1])[:1]
    return list(dict.fromkeys(candidates))


def _close(a: float, b: float, rel_tol: float = 1e-6) -> bool:
    return abs(a - b) <= rel_tol * max(1.0, abs(b))


def _json_object(text: str) -> dict | None:
    layout = markdown.layout(text)
    sources = [b.body for b in layout.blocks if b.lang in ("json", "jsonc", "")] + [text]
    decoder = json.JSONDecoder()
    for source in sources:
        for m in re.finditer(r"\{", source):
            try:
                value, _ = decoder.raw_decode(source, m.start())
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def python_source(text: str) -> str | None:
    """The answer's Python: its python-fenced (or unlabelled) blocks that parse, else the whole
    answer when it parses."""
    layout = markdown.layout(text)
    blocks = [b.body for b in layout.blocks if b.lang in ("python", "py", "python3", "")]
    for source in ("\n\n".join(blocks), text) if blocks else (text,):
        try:
            ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        return source
    return None


@lru_cache(maxsize=256)
def _run(source: str, asserts: tuple[str, ...]) -> sandbox.Outcome:
    return sandbox.run_python(source, list(asserts))


def _python(text: str, spec: dict) -> Verdict:
    source = python_source(text)
    if source is None:
        return Verdict(False, "no Python that parses")
    name = spec["function"]
    defined = {n.name for n in ast.parse(source).body
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    if name not in defined:
        return Verdict(False, f"no function {name}()")
    outcome = _run(source, tuple(spec.get("asserts", ())))
    return Verdict(outcome.passed, outcome.detail)


def _words(text: str) -> int:
    cjk = sum(1 for c in text if script_of(c) in CJK)
    other = re.sub(r"[^\w\s'-]|_", " ", "".join(" " if script_of(c) in CJK else c for c in text))
    return cjk + len([w for w in other.split() if any(ch.isalnum() for ch in w)])


def bullets(text: str) -> int:
    items = [m.group(1).expandtabs(4) for m in map(BULLET.match, text.splitlines()) if m]
    return sum(1 for indent in items if len(indent) == min(map(len, items))) if items else 0


def validate(spec: dict) -> None:
    """ValueError, one line, when a check is malformed (unknown key, bad regex, wrong type)."""
    if not isinstance(spec, dict):
        raise ValueError("an answer check is an object")
    unknown = set(spec) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown answer check(s): {', '.join(sorted(unknown))}")
    try:
        if "regex" in spec:
            re.compile(spec["regex"])
        if "number" in spec:
            float(spec["number"])
        for key in ("bullets", "max_words", "min_words", "max_chars"):
            if key in spec and not isinstance(spec[key], int):
                raise ValueError(f"{key} must be an integer")
        for key in ("json_keys", "json_has_keys", "contains"):
            if key in spec and not (isinstance(spec[key], list) and all(isinstance(k, str) for k in spec[key])):
                raise ValueError(f"{key} must be a list of strings")
        if "python" in spec and not (isinstance(spec["python"], dict) and isinstance(spec["python"].get("function"), str)):
            raise ValueError("python must be {\"function\": name, \"asserts\": [...]}")
    except (re.error, TypeError) as exc:
        raise ValueError(f"bad answer check: {exc}") from None


def check(spec: dict, content: str) -> Verdict:
    """Every key of `spec` must hold for `content`; the first that does not is the verdict's detail."""
    validate(spec)
    text = content.strip()
    if not text:
        return Verdict(False, "empty answer")
    if "number" in spec:
        got = final_numbers(text)
        if not any(_close(v, float(spec["number"]), float(spec.get("rel_tol", 1e-6))) for v in got):
            return Verdict(False, f"expected {spec['number']}, final number(s) {got or 'none'}")
    if "python" in spec:
        verdict = _python(text, spec["python"])
        if not verdict.passed:
            return verdict
    if "json_keys" in spec or "json_has_keys" in spec or "json_values" in spec:
        obj = _json_object(text)
        if obj is None:
            return Verdict(False, "no JSON object")
        missing = [k for k in spec.get("json_keys", []) + spec.get("json_has_keys", []) if k not in obj]
        if missing:
            return Verdict(False, f"JSON object lacks {missing}")
        extra = [k for k in obj if "json_keys" in spec and k not in spec["json_keys"]]
        if extra:
            return Verdict(False, f"JSON object has keys nobody asked for: {extra}")
        for key, want in spec.get("json_values", {}).items():
            got = obj.get(key)
            same = str(got).casefold() == str(want).casefold() if isinstance(want, str) else got == want
            if not same:
                return Verdict(False, f"JSON {key}={got!r}, expected {want!r}")
    if "bullets" in spec and bullets(text) != spec["bullets"]:
        return Verdict(False, f"{bullets(text)} list items, expected {spec['bullets']}")
    if "max_words" in spec and not 0 < _words(text) <= spec["max_words"]:
        return Verdict(False, f"{_words(text)} words, expected at most {spec['max_words']}")
    if "min_words" in spec and _words(text) < spec["min_words"]:
        return Verdict(False, f"{_words(text)} words, expected at least {spec['min_words']}")
    chars = len(re.sub(r"\s", "", text))
    if "max_chars" in spec and not 0 < chars <= spec["max_chars"]:
        return Verdict(False, f"{chars} characters, expected at most {spec['max_chars']}")
    if "regex" in spec and not re.search(spec["regex"], text):
        return Verdict(False, f"no match for /{spec['regex']}/")
    for needle in spec.get("contains", []):
        if needle.casefold() not in text.casefold():
            return Verdict(False, f"does not contain {needle!r}")
    if spec.get("lowercase") and any(ch.isupper() for ch in text):
        return Verdict(False, "has upper-case letters")
    if "forbid" in spec and spec["forbid"] in text:
        return Verdict(False, f"contains {spec['forbid']!r}")
    if "ends_with" in spec and not text.rstrip("*_ \n").endswith(spec["ends_with"]):
        return Verdict(False, f"does not end with {spec['ends_with']!r}")
    for word, n in spec.get("min_count", {}).items():
        count = len(re.findall(rf"\b{re.escape(word)}\b", text, re.I))
        if count < n:
            return Verdict(False, f"{word!r} {count} times, expected at least {n}")
    if "script" in spec and spec["script"] not in scripts_in(text):
        return Verdict(False, f"no {spec['script']} letters")
    return Verdict(True)


def same_answer_to_different_prompts(answers: dict[str, str], minimum: int = 3) -> list[list[str]]:
    """Groups of at least `minimum` prompt ids that got the same (whitespace- and case-normalised)
    answer: a server answering everything alike, whatever the checks say."""
    groups: dict[str, list[str]] = {}
    for pid, text in answers.items():
        key = " ".join(text.split()).casefold()
        if key:
            groups.setdefault(key, []).append(pid)
    return [ids for ids in groups.values() if len(ids) >= minimum]
