"""Answers that end without a reason, or whose stop falls in the middle of a sentence.

Principle. The finish reason says why generation ended: `stop` (the model ended its answer),
`length` (a token limit), `tool_calls`. Anything else (none, `abort`, `error`) is a cut the model
did not choose. A `length` stop short of max_tokens is unexplained, unless the server's context
window ended it: the caller says so (`context_limited`), or passes the served `max_model_len` and
the prompt's token count, and prompt + completion reaching the window explains it.

A `stop` is the model's own end, so the answer must end where a sentence or a structure can end:
not inside an open code fence, bracket or quotation; not on a continuation mark (comma, colon,
semicolon, dash, 、，；：); not on a word that cannot end an English sentence (an article,
preposition, conjunction, relative, quantifier, auxiliary or possessive) or a Chinese connective
or auxiliary (的 和 与 因为 导致 会 ...);
and a final paragraph that is one long prose sentence (twelve English words, or sixteen CJK
characters with a clause comma) must close with terminal punctuation. Verse and lists (several
short lines without punctuation), headings, tables and list items are exempt from that last rule.
"""

from __future__ import annotations

import re

from . import Finding
from .markdown import Layout
from .scripts import CJK, script_of

REASONS = ("stop", "length", "tool_calls")
TERMINAL = ".!?。！？…‥」』”’\"')）]】》>*_`~$|:：;；"    # ':' etc. are judged as continuation below
CONTINUATION = ",，、;；:：-–—(（[【“‘«"
DANGLING_EN = set("""the a an of to for with from into onto by at and or but nor because than whose which who whom
when where while whether if unless although though so such every each either neither both any some no very more
most less my your our their its his her is are was were be been being has have had will would can could should
shall may might must does did toward towards among amongst between beneath beside during except upon via against
until unlike despite regarding concerning including per""".split())
DANGLING_ZH = ("的", "和", "与", "及", "或", "或者", "在", "把", "被", "对", "从", "向", "给", "跟", "因为", "所以",
               "但是", "但", "而", "而且", "并且", "以及", "如果", "虽然", "由于", "为了", "然后", "即", "是", "将",
               "会", "能", "就", "让", "使", "导致", "包括", "例如", "比如", "这", "那", "其", "一个", "时", "时候")
PAIRS = [("([", ")]"), ("（", "）"), ("“", "”"), ("「", "」"), ("【", "】"), ("《", "》")]   # ( and [ pair either way: [0, 1)
STRUCTURAL = re.compile(r"^\s*(?:[-*+•>|#]|\d+[.)、]|[A-Za-z][.)]\s)")


def finish(finish_reason: str | None, completion_tokens: int | None, max_tokens: int | None,
           context_limited: bool | None, max_model_len: int | None, prompt_tokens: int | None) -> list[Finding]:
    if finish_reason not in REASONS:
        return [Finding("truncated-without-reason", f"finish_reason={finish_reason!r}")]
    if finish_reason == "length" and completion_tokens is not None and max_tokens and completion_tokens < max_tokens:
        if context_limited:
            return []
        if max_model_len and prompt_tokens is not None and prompt_tokens + completion_tokens >= max_model_len - 1:
            return []
        window = f", context window {max_model_len} with a {prompt_tokens}-token prompt" if max_model_len else ""
        return [Finding("truncated-without-reason",
                        f"finish_reason=length after {completion_tokens} of {max_tokens} tokens{window}")]
    return []


def _last_paragraph(prose: str) -> list[str]:
    paragraphs = [p for p in re.split(r"\n\s*\n", prose) if p.strip()]
    return [line.rstrip() for line in paragraphs[-1].splitlines() if line.strip()] if paragraphs else []


def mid_sentence(layout: Layout) -> list[Finding]:
    """For a `stop`: does the answer end where a sentence or structure can end?"""
    open_blocks = [b for b in layout.blocks if not b.closed]
    if open_blocks:
        return [Finding("stopped-mid-sentence", f"ended inside an open {open_blocks[-1].lang or 'code'} block")]
    text = layout.text.rstrip()
    if not text or layout.prose[len(text) - 1:len(text)].isspace():
        return []        # ends with a closed block or math: a structure that ended
    lines = _last_paragraph(layout.prose[:len(text)])
    if not lines:
        return []
    last = lines[-1].strip().rstrip("*_~ ")
    tail = last[-40:]
    words = re.findall(r"[A-Za-z']+", last)
    if last and last[-1] in CONTINUATION:
        return [Finding("stopped-mid-sentence", f"ends on {last[-1]!r}: {tail!r}")]
    paragraph = " ".join(lines)
    for o, c in PAIRS:
        if sum(map(paragraph.count, o)) > sum(map(paragraph.count, c)):
            return [Finding("stopped-mid-sentence", f"{o[0]!r} never closed: {tail!r}")]
    if last[-1:] in TERMINAL or not last[-1:].strip():
        return []
    if words and last.endswith(words[-1]) and words[-1].lower() in DANGLING_EN and len(words) >= 3:
        return [Finding("stopped-mid-sentence", f"ends on {words[-1]!r}: {tail!r}")]
    cjk = sum(1 for ch in last if script_of(ch) in CJK)
    if script_of(last[-1]) in CJK and last.endswith(DANGLING_ZH) and cjk >= 6:
        return [Finding("stopped-mid-sentence", f"ends on a connective: {tail!r}")]
    prose_lines = [line for line in lines if not STRUCTURAL.match(line)]
    if len(prose_lines) != len(lines):
        return []
    earlier_closed = all(line.rstrip("*_ ")[-1:] in ".!?。！？:：" for line in lines[:-1])
    if not earlier_closed:
        return []         # verse: several lines without punctuation
    sentence = re.split(r"(?<=[.!?。！？])\s*", last)[-1]
    if len(re.findall(r"[A-Za-z']+", sentence)) >= 12 and re.search(r"[a-z]$", sentence) \
            or sum(1 for ch in sentence if script_of(ch) in CJK) >= 16 and "，" in sentence:
        return [Finding("stopped-mid-sentence", f"last sentence never closes: {tail!r}")]
    return []
