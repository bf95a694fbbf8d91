"""Answers that end without a reason, or whose stop falls in the middle of a sentence.

The finish reason. `detect(finish_reason=...)` tells three cases apart, explicitly:

- a string: what the server sent. `stop` (the model ended its answer), `length` (a token limit),
  `tool_calls`; anything else (`abort`, `error`, ...) is a cut the model did not choose:
  "truncated-without-reason";
- None: the stream was watched and ended without any finish reason. That is a server or stream
  failure (a connection cut, a missing final chunk), not corruption of the text, and it is reported
  as "truncated-without-reason" with that detail (see `STREAM_SYMPTOMS`). verify calls `detect`
  with the finish reason its client saw, None when the stream delivered none;
- UNKNOWN: the finish reason was not recorded (a labelled text judged offline, where the file
  holds null). Nothing is said about the server; the ending is judged as a `stop` would be, since
  an unknown reason excuses no cut.

A `length` stop is the caller's limit when the token counts show it: completion_tokens reached
max_tokens, or the server's context window ended it (the caller says so with `context_limited`, or
passes the served `max_model_len` and the prompt's token count). Short of both, it is unexplained
("truncated-without-reason"). With no counts at all (offline), nothing shows the cut was asked
for, so the ending is judged as for a `stop`.

Where a stop must end. The answer must end where a sentence or a structure can end: not inside an
open code fence, bracket or quotation; not on a continuation mark (comma, colon, semicolon, dash,
、，；：); not on a word that cannot end an English sentence (an article, preposition, conjunction,
relative, quantifier, auxiliary or possessive) or a Chinese connective or auxiliary (的 和 与 因为
导致 会 ...). An emoji closes a sentence (chat answers end on one). A last paragraph of prose
that is one long sentence (twelve English words, or sixteen CJK characters with a clause mark)
must close with terminal punctuation. Lines are consistent with their siblings: a last list item
of some length (five words, eight CJK characters) whose earlier sibling items all end with
terminal punctuation must too, a last line continuing a line that ended on a comma must close, and so must a last sentence of
some length (six words, ten CJK characters) after closed sentences in its paragraph.
Verse and lists without punctuation, headings and tables are exempt.
"""

from __future__ import annotations

import re
import unicodedata

from . import Finding
from .markdown import Layout
from .scripts import CJK, script_of


class _Unknown:
    """The finish reason was not recorded (see the module docstring)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
REASONS = ("stop", "length", "tool_calls")
STREAM_SYMPTOMS = ("truncated-without-reason",)     # said of the server or the stream, not of the text
TERMINAL = ".!?。！？…‥」』”’\"')）]】》>*_`~$|:：;；"    # ':' etc. are judged as continuation below
SENTENCE_END = ".!?。！？…"
CONTINUATION = ",，、;；:：-–—(（[【“‘«"
DANGLING_EN = set("""the a an of to for with from into onto by at and or but nor because than whose which who whom
when where while whether if unless although though so such every each either neither both any some no very more
most less my your our their its his her is are was were be been being has have had will would can could should
shall may might must does did toward towards among amongst between beneath beside during except upon via against
until unlike despite regarding concerning including per""".split())
DANGLING_ZH = ("的", "和", "与", "及", "或", "或者", "在", "把", "被", "对", "从", "向", "给", "跟", "因为", "所以",
               "但是", "但", "而", "而且", "并且", "以及", "如果", "虽然", "由于", "为了", "然后", "即", "是", "将",
               "会", "能", "就", "让", "使", "导致", "包括", "例如", "比如", "这", "那", "其", "一个", "时", "时候", "以")
PAIRS = [("([", ")]"), ("（", "）"), ("“", "”"), ("「", "」"), ("【", "】"), ("《", "》")]   # ( and [ pair either way: [0, 1)
STRUCTURAL = re.compile(r"^\s*(?:[-*+•]\s|[>|#]|\d+[.)、]|[A-Za-z][.)]\s)")
LIST_ITEM = re.compile(r"^(\s*)(?:[-*+•]\s+|\d+[.)、]\s*|[A-Za-z][.)]\s+)")
URL_END = re.compile(r"(?:https?://|www\.)\S+$|\S+@\S+\.\w+$")
EMOJI_TAIL = {0xFE0F, 0xFE0E, 0x200D, 0x20E3} | set(range(0x1F3FB, 0x1F400)) | set(range(0xE0020, 0xE0080))


def finish(finish_reason, completion_tokens: int | None, max_tokens: int | None, context_limited: bool | None,
           max_model_len: int | None, prompt_tokens: int | None) -> list[Finding]:
    if finish_reason is UNKNOWN:
        return []
    if finish_reason is None:
        return [Finding("truncated-without-reason", "the stream ended without a finish reason "
                                                    "(a server or stream failure, not text corruption)")]
    if finish_reason not in REASONS:
        return [Finding("truncated-without-reason", f"finish_reason={finish_reason!r}")]
    if finish_reason == "length" and completion_tokens is not None and max_tokens and completion_tokens < max_tokens:
        if _window_explains(completion_tokens, context_limited, max_model_len, prompt_tokens):
            return []
        window = f", context window {max_model_len} with a {prompt_tokens}-token prompt" if max_model_len else ""
        return [Finding("truncated-without-reason",
                        f"finish_reason=length after {completion_tokens} of {max_tokens} tokens{window}")]
    return []


def _window_explains(completion_tokens, context_limited, max_model_len, prompt_tokens) -> bool:
    return bool(context_limited) or bool(max_model_len and prompt_tokens is not None
                                         and prompt_tokens + completion_tokens >= max_model_len - 1)


def ending_to_judge(finish_reason, completion_tokens: int | None, max_tokens: int | None,
                    context_limited: bool | None, max_model_len: int | None, prompt_tokens: int | None) -> str | None:
    """Whether the ending must be one a sentence can have, and how to say why (None: not judged)."""
    if finish_reason == "stop":
        return ""
    if finish_reason is UNKNOWN:
        return " (finish reason not recorded)"
    if finish_reason == "length" and (completion_tokens is None or not max_tokens) \
            and not _window_explains(completion_tokens or 0, context_limited, max_model_len, prompt_tokens):
        return " (finish_reason=length, and no token counts show the limit was the caller's)"
    return None


def _last_paragraph(prose: str) -> list[str]:
    paragraphs = [p for p in re.split(r"\n\s*\n", prose) if p.strip()]
    return [line.rstrip() for line in paragraphs[-1].splitlines() if line.strip()] if paragraphs else []


def _pictograph(ch: str) -> bool:
    return unicodedata.category(ch) == "So" or ord(ch) in EMOJI_TAIL


def _size(line: str) -> tuple[int, int]:
    """English words and CJK characters in a line."""
    return len(re.findall(r"[A-Za-z']+", line)), sum(1 for ch in line if script_of(ch) in CJK)


def _open_sibling(prose_lines: list[str]) -> str | None:
    """The last line breaks with its siblings: a list item whose earlier items all close their
    sentence, or a line continuing one that ended on a comma."""
    last = prose_lines[-1].rstrip("*_~ ")
    words, cjk = _size(last)
    if not (last[-1:].isalnum() or script_of(last[-1:] or " ")) or URL_END.search(last):
        return None       # ends on punctuation already judged, or on a link or address
    m = LIST_ITEM.match(prose_lines[-1])
    if m:
        indent, siblings = len(m.group(1)), []
        for line in reversed(prose_lines[:-1]):
            s = LIST_ITEM.match(line)
            if s and len(s.group(1)) == indent:
                siblings.append(line.rstrip("*_~ "))
            elif not line.startswith(" " * (indent + 1)):
                break
        if len(siblings) >= 2 and all(s[-1:] in SENTENCE_END for s in siblings) and (words >= 5 or cjk >= 8):
            return f"the last list item never closes, unlike the {len(siblings)} before it"
        return None
    if len(prose_lines) >= 2 and prose_lines[-2].rstrip("*_~ ")[-1:] in ",，" and not STRUCTURAL.match(last) \
            and (cjk >= 4 or words >= 6):
        return "the sentence the line before opened never closes"
    return None


def mid_sentence(layout: Layout, why: str = "") -> list[Finding]:
    """Does the answer end where a sentence or structure can end? `why` is added to the detail."""
    open_blocks = [b for b in layout.blocks if not b.closed]
    if open_blocks:
        return [Finding("stopped-mid-sentence", f"ended inside an open {open_blocks[-1].lang or 'code'} block{why}")]
    text = layout.text.rstrip()
    if not text or layout.prose[len(text) - 1:len(text)].isspace():
        return []        # ends with a closed block or math: a structure that ended
    prose_lines = [line for line in layout.prose[:len(text)].splitlines() if line.strip()]
    lines = _last_paragraph(layout.prose[:len(text)])
    if not lines:
        return []
    last = lines[-1].strip().rstrip("*_~ ")
    tail = last[-40:]

    def found(what: str) -> list[Finding]:
        return [Finding("stopped-mid-sentence", f"{what}: {tail!r}{why}")]

    words = re.findall(r"[A-Za-z']+", last)
    if last and last[-1] in CONTINUATION:
        return found(f"ends on {last[-1]!r}")
    paragraph = " ".join(lines)
    for o, c in PAIRS:
        if sum(map(paragraph.count, o)) > sum(map(paragraph.count, c)):
            return found(f"{o[0]!r} never closed")
    if last[-1:] in TERMINAL or not last[-1:].strip() or _pictograph(last[-1]):
        return []
    if words and last.endswith(words[-1]) and words[-1].lower() in DANGLING_EN and len(words) >= 3:
        return found(f"ends on {words[-1]!r}")
    cjk = sum(1 for ch in last if script_of(ch) in CJK)
    if script_of(last[-1]) in CJK and last.endswith(DANGLING_ZH) and cjk >= 6:
        return found("ends on a connective")
    sibling = _open_sibling(prose_lines)
    if sibling:
        return found(sibling)
    if any(STRUCTURAL.match(line) for line in lines):
        return []
    earlier_closed = all(line.rstrip("*_ ")[-1:] in ".!?。！？:：" for line in lines[:-1])
    if not earlier_closed:
        return []         # verse: several lines without punctuation
    *earlier, sentence = re.split(r"(?<=[.!?。！？])\s*", " ".join(lines))
    words, cjk = _size(sentence)
    if words >= 12 and re.search(r"[a-z]$", sentence) or cjk >= 16 and re.search("[，；、]", sentence):
        return found("last sentence never closes")
    if any(e.strip() for e in earlier) and (words >= 6 and re.search(r"[a-z]$", sentence) or cjk >= 10):
        return found("the last sentence never closes, unlike those before it")
    return []
