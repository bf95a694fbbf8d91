"""Degenerate repetition at character, phrase, sentence and paragraph level, in any language.

Principle. A decoder stuck in a loop emits the same unit back to back. Text may repeat a word or
a line for a reason, so what counts is how much is repeated, weighed by how much the unit says:
its weight is its letters, a CJK character counting two (CJK writes a word in one or two
characters and puts no spaces between words, so units are characters and clauses, not words).

- Within a line (any language, code included): a unit of 1..60 characters, at least half of them
  letters, repeated back to back: 12 times for one character, 6 times for a unit of weight 2 or
  more ("the the the ..."), 4 times from weight 6, 3 times from weight 15.
- Across units (sentences and clauses of prose, split at . ! ? 。！？，；、 and line breaks; lines
  of code; whole code blocks): a block of 1..12 consecutive units that recurs immediately: 6 copies of weight 2 or
  more (a list item or a line of code in a loop), 3 copies of weight 12 or more (a sentence loop),
  or 2 copies of weight 40 or more holding a unit of weight 30 (a sentence or a paragraph said twice;
  a stanza of short lines sung twice is a refrain).
- Anywhere in the prose: the same sentence of weight 40 or more four times or more (a reasoning
  loop with variations in between), or the same paragraph of prose (weight 60 or more) twice: an
  answer never says a whole paragraph again word for word. Verse is exempt (a stanza of short lines
  may come back as a refrain), as are lists.

- Filler: six or more blank lines in a row, or in prose one or two symbols (an emoji, "!") twelve
  times or more; Markdown's rule and separator characters (- = _ * ~ # . | + : /) and digits are
  not filler ("====" separators, 1000000000000).

Texts over 24,000 characters are read at their first and last 12,000 (loops run to the end).
"""

from __future__ import annotations

import re
from functools import lru_cache

from . import Finding
from .scripts import CJK, script_of

INLINE = re.compile(r"(.{1,60}?)\1{2,}")
UNIT_END = re.compile(r"(?<=[.!?。！？，；、;])\s*|\n+")
MAX_PERIOD = 12


def weight(text: str) -> int:
    return sum(2 if script_of(c) in CJK else 1 for c in text if script_of(c))


@lru_cache(maxsize=64)
def _longer_than(n: int) -> re.Pattern:
    return re.compile(rf"(.{{{n + 1},60}}?)\1{{2,}}")


def _loop(m: re.Match[str]) -> Finding | None:
    unit, copies = m.group(1), len(m.group(0)) // len(m.group(1))
    core = re.sub(r"[\W_]+$", "", unit)
    if core and m.string.startswith(core, m.end()):
        copies += 1           # the last copy, without its trailing space or comma
    letters = sum(1 for c in unit if script_of(c))
    w = weight(unit)
    need = 12 if len(unit.strip()) <= 1 else 6 if w < 6 else 4 if w < 15 else 3
    if letters and letters * 2 >= len(unit.replace(" ", "")) and copies >= need:
        return Finding("repetition", f"{unit.strip()[:40]!r} {copies} times in a row")
    return None


def _inline(text: str) -> Finding | None:
    for line in text.splitlines():
        pos = 0
        while (m := INLINE.search(line, pos)) is not None:
            start = m.start()
            for _ in range(3):        # a short repeat ("aaa") may open a longer loop at the same place
                found = _loop(m)
                if found:
                    return found
                if len(m.group(1)) >= 60 or not any(script_of(c) for c in m.group(0)):
                    break
                m = _longer_than(len(m.group(1))).match(line, start)
                if m is None:
                    break
            pos = start + 1
    return None


LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+•>]|\d+[.)、]|[A-Za-z][.)])[ \t]+", re.M)


def _units(text: str) -> list[str]:
    """Sentences and clauses, lower-cased, without list markers or numbering (a list item that
    loops keeps its text and changes its number)."""
    return [" ".join(u.split()).lower() for u in UNIT_END.split(LIST_MARKER.sub("", text)) if u and u.strip()]


def _blocks(units: list[str], kind: str) -> Finding | None:
    n = len(units)
    for p in range(1, min(MAX_PERIOD, n // 2) + 1):
        i = 0
        while i + p < n:
            if units[i] != units[i + p]:
                i += 1
                continue
            j = i
            while j + p < n and units[j] == units[j + p]:
                j += 1
            copies = (j - i) // p + 1
            w = sum(weight(u) for u in units[i:i + p])
            sentence = max(weight(u) for u in units[i:i + p]) >= 30      # not verse lines or clauses alone
            if copies >= 6 and w >= 2 or copies >= 3 and w >= 12 or copies >= 2 and w >= 40 and sentence:
                shown = " ".join(units[i:i + p])[:60]
                return Finding("repetition", f"{kind} block of {p} unit(s) repeated {copies} times: {shown!r}")
            i = j + 1
    return None


def _paragraph_twice(prose: str) -> Finding | None:
    seen: set[str] = set()
    for paragraph in re.split(r"\n[ \t]*\n", prose):
        lines = [line for line in paragraph.splitlines() if line.strip()]
        if not lines or any(LIST_MARKER.match(line) for line in lines) or len(lines) >= 2 and \
                all(weight(line) < 50 for line in lines):
            continue      # a list, or verse
        key = " ".join(paragraph.split()).lower()
        if weight(key) < 60:
            continue
        if key in seen:
            return Finding("repetition", f"the paragraph {key[:60]!r} twice")
        seen.add(key)
    return None


def _recurring(units: list[str]) -> Finding | None:
    seen: dict[str, int] = {}
    for u in units:
        if weight(u) >= 40:
            seen[u] = seen.get(u, 0) + 1
            if seen[u] >= 4:
                return Finding("repetition", f"the sentence {u[:60]!r} {seen[u]} times")
    return None


BLANK_RUN = re.compile(r"\n(?:[ \t]*\n){6,}")
SYMBOL_LOOP = re.compile(r"([^\w\s\-=_*~#.|+:/\\`]{1,2})\1{11,}")


def _filler(text: str, prose: str) -> Finding | None:
    """Whitespace or symbols emitted in a loop: six or more blank lines in a row, or in prose a
    unit of one or two symbols (not the - = _ * ~ # . | + : / rules and separators Markdown draws
    with, not digits) twelve times or more."""
    m = BLANK_RUN.search(text)
    if m:
        return Finding("repetition", f"{m.group(0).count(chr(10)) - 1} blank lines in a row")
    m = SYMBOL_LOOP.search(prose)
    if m:
        return Finding("repetition", f"{m.group(1)!r} {len(m.group(0)) // len(m.group(1))} times in a row")
    return None


def repetition(text: str, prose: str, code_bodies: list[str]) -> list[Finding]:
    if len(text) > 24000:
        text, prose = text[:12000] + "\n" + text[-12000:], prose[:12000] + "\n" + prose[-12000:]
    found = _inline(text) or _filler(text, prose)
    if not found:
        units = _units(prose)
        found = _blocks(units, "prose") or _recurring(units) or _paragraph_twice(prose)
    for body in code_bodies:
        if found:
            break
        found = _blocks([" ".join(line.split()) for line in body.splitlines() if line.strip()], "code")
    if not found:
        found = _blocks([" ".join(body.split()) for body in code_bodies if body.strip()], "code-block")
    return [found] if found else []
