"""Prose versus code and math in a Markdown answer.

Most detectors judge prose only: inside code and math, foreign scripts, symbols, markup and
repetition are normal. `layout()` finds fenced blocks (``` or ~~~, with the declared language;
a fence left open runs to the end), inline code, and TeX math ($$..$$, \\[..\\], \\(..\\),
\\begin{..}..\\end{..}, and $..$ under Pandoc's rule: no space inside either dollar, no digit right
after the closing one, so "$80 and $66" stays prose). `prose` has the same length and line breaks
as the text, with every code and math character replaced by a space, so positions carry over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FENCE_OPEN = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^\s`{]*)[^\n`]*$")
INLINE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)")
MATH = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|\\begin\{([A-Za-z*]+)\}.+?\\end\{\1\}"
                  r"|(?<![\\$])\$(?=[^\s$])[^$\n]+?(?<=[^\s\\])\$(?![\d$])", re.S)


@dataclass(frozen=True)
class CodeBlock:
    lang: str          # the declared language, lower case ("" when none)
    body: str
    closed: bool       # False: the fence was still open at the end of the text
    start: int         # offset of the opening fence


@dataclass
class Layout:
    text: str
    prose: str
    blocks: list[CodeBlock] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)   # masked (code and math) spans


def _blank(chars: list[str], start: int, end: int) -> None:
    for i in range(start, end):
        if chars[i] != "\n":
            chars[i] = " "


def layout(text: str) -> Layout:
    chars = list(text)
    out = Layout(text, "")
    lines = text.splitlines(keepends=True)
    offset, i = 0, 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i].rstrip("\n"))
        if not m:
            offset += len(lines[i])
            i += 1
            continue
        fence, start = m.group(1), offset
        body, j, closed = [], i + 1, False
        end = offset + len(lines[i])
        while j < len(lines):
            stripped = lines[j].strip()
            end += len(lines[j])
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                closed = True
                j += 1
                break
            body.append(lines[j])
            j += 1
        out.blocks.append(CodeBlock(m.group(2).lower(), "".join(body), closed, start))
        out.spans.append((start, end))
        _blank(chars, start, end)
        offset, i = end, j
    masked = "".join(chars)
    for pattern in (INLINE, MATH):
        for m in pattern.finditer(masked):
            out.spans.append((m.start(), m.end()))
            _blank(chars, m.start(), m.end())
        masked = "".join(chars)
    out.prose = masked
    out.spans.sort()
    return out
