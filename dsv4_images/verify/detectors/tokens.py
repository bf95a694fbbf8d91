"""Pieces of the tokenizer or the byte stream that reached the text.

Special and control tokens. A chat model's special tokens are never text: every common tokenizer
family writes them in a shape ordinary prose does not use, so the shapes are the rule, not a list
of token names: DeepSeek `<｜...｜>` (fullwidth bars), ChatML / GPT / Llama 3 / Phi `<|...|>`
(`<|im_start|>`, `<|eot_id|>`, `<|start_header_id|>`), Llama 2 / Mistral `[INST]`, `[/INST]`,
`<<SYS>>`, `[TOOL_CALLS]`, Gemma `<start_of_turn>`, SentencePiece `<s>`, `</s>`, `<unk>`, `<pad>`,
T5 `<extra_id_N>`, BERT `[CLS]`, `[SEP]`, `[MASK]`, tool-call tags `<tool_call>`, and byte-fallback
tokens `<0x0A>`; also a token cut in half (`<｜` or `｜>`, `<|im_end` without its bar). One counts,
anywhere outside code, unless the prompt quotes it. Think tags are
expected only as one leading block (`<think>...</think>` at the start, or a bare `</think>` when
the template opened it); any other think tag is a leak.

Byte-level BPE markers. GPT-2-style tokenizers write a space as Ġ and a newline as Ċ; SentencePiece
writes a space as ▁. They leak when decoding skips the byte mapping. Ġ and Ċ are also Maltese
letters, so they count only where no Maltese word can put them: right after a letter or digit
("helloĠworld"). ▁ counts when a letter follows it (a sparkline ▁▂▃ is followed by blocks).

Control characters: C0/C1 controls other than tab and newlines, private-use code points,
surrogates, noncharacters, and invisible format characters except the joiners that emoji and
Indic or Persian spelling need (ZWJ, ZWNJ, the emoji tag characters) and the direction marks when
the text holds a right-to-left script. U+FFFD (the replacement character) is its own symptom: bytes
that were not valid UTF-8. Unassigned code points are not flagged: Python's Unicode tables may
predate a new emoji.

Mojibake: UTF-8 bytes decoded as Windows-1252 ("Ã©", "æœºå™¨") or as GBK ("锟斤拷"). A run
counts when re-encoding it that way gives valid UTF-8 that differs from it: ordinary accented
text never round-trips like that.

Markup fragments: HTML elements (the tag names the HTML standard defines, written as a tag:
`<div>`, `</span>`, `<a href="...">`, `<br/>`) and character references (`&nbsp;`, `&#39;`) in
prose, when the prompt does not ask about markup. Markdown lets an answer use HTML for what it
cannot say itself, so `<br>`, and balanced `<sup>`, `<sub>`, `<kbd>`, `<details>`, `<summary>`,
are allowed. Comparisons ("a<b and b>c") and generics ("List<String>") are not tags.
"""

from __future__ import annotations

import re
import unicodedata

from . import Finding, excerpt
from .scripts import CJK, script_of

SPECIAL_TOKEN = re.compile(
    r"<｜[^｜<>\n]{1,60}｜>"                                   # DeepSeek
    r"|<\|[^|<>\s]{1,60}\|>"                                    # ChatML, GPT, Llama 3, Phi, Qwen
    r"|\[/?INST\]|<</?SYS>>|\[/?(?:AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|SYSTEM_PROMPT)\]"   # Llama 2, Mistral
    r"|</?s>|<(?:unk|pad|mask|bos|eos|sep|cls)>|</?(?:start|end)_of_turn>|<extra_id_\d+>"      # SentencePiece, Gemma, T5
    r"|\[(?:PAD|UNK|CLS|SEP|MASK)\]"                                                          # BERT
    r"|</?(?:tool_call|tool_response|function_call)s?>"
    r"|<0x[0-9A-Fa-f]{2}>"                                                                    # byte fallback
    r"|<｜|｜>|<\|(?:im_|end|eot|eom|start_|begin_|reserved|fim_|endof|system|user|assistant)\w*")  # cut-off halves
THINK = re.compile(r"</?think>")
BPE_MARKER = re.compile(r"[ĠĊ]|▁(?=[^\W\d_])")
ALLOWED_FORMAT = {0x200C, 0x200D} | set(range(0xE0020, 0xE0080))
DIRECTION_MARKS = {0x200E, 0x200F, 0x061C, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}
RTL = {"hebrew", "arabic", "syriac", "thaana", "nko"}
CP1252_EXTRA = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
MOJIBAKE = re.compile(rf"[\u00c2-\u00f4][\u00a0-\u00bf{CP1252_EXTRA}]{{1,3}}"
                      rf"(?:[\u00c2-\u00f4][\u00a0-\u00bf{CP1252_EXTRA}]{{1,3}})*")
HTML_ELEMENTS = set("""a abbr address area article aside audio b base bdi bdo blockquote body br button canvas
caption cite code col colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption
figure footer form h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img input ins kbd label legend li link
main map mark menu meta meter nav noscript object ol optgroup option output p param picture pre progress q rp rt
ruby s samp script search section select slot small source span strong style sub summary sup table tbody td
template textarea tfoot th thead time title tr track u ul var video wbr font center""".split())
MARKDOWN_HTML = {"br", "sup", "sub", "kbd", "details", "summary"}
TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)((?:\s+[A-Za-z_:][-\w:.]*\s*=\s*(?:\"[^\"<>]*\"|'[^'<>]*'|[^\s\"'<>=]+))*)"
                 r"\s*(/?)>")
ENTITY = re.compile(r"&(?:[A-Za-z]{2,8}|#\d{2,6}|#[xX][0-9A-Fa-f]{2,5});")
MARKUP_INVITED = re.compile(r"html|xml|svg|markup|\btags?\b|element|jsx|vue|react|angular|web ?page|网页|标签|前端",
                            re.I)


QUOTES = "\"'`‘’“”«»「」『』()[]（）【】"


def _quoted(prose: str, start: int, end: int) -> bool:
    """The span is named, not emitted: quotes or brackets hold it and nothing else."""
    return 0 < start and end < len(prose) and prose[start - 1] in QUOTES and prose[end] in QUOTES


def special_tokens(text: str, prose: str, prompt: str, reasoning_in_content: bool = False) -> list[Finding]:
    for m in SPECIAL_TOKEN.finditer(prose):
        if m.group(0) not in prompt and not _quoted(prose, m.start(), m.end()):
            return [Finding("special-token", f"leaked {m.group(0)!r}: {excerpt(text, m.start(), m.end())!r}")]
    tags = [m for m in THINK.finditer(prose) if m.group(0) not in prompt and not _quoted(prose, m.start(), m.end())]
    if tags:
        shape = [t.group(0) for t in tags]
        leading = shape == ["</think>"] or shape == ["<think>", "</think>"] and not re.search(r"\S", prose[:tags[0].start()])
        if not (reasoning_in_content and leading):
            where = "" if reasoning_in_content else " (the answer's content holds no reasoning markup)"
            return [Finding("special-token", f"think tag {tags[-1].group(0)!r} out of place{where}: "
                                             f"{excerpt(text, tags[-1].start(), tags[-1].end())!r}")]
    return []


def bpe_markers(text: str, prose: str) -> list[Finding]:
    prose = SPECIAL_TOKEN.sub(lambda m: " " * len(m.group(0)), prose)     # DeepSeek's own tokens hold ▁
    found = [m for m in BPE_MARKER.finditer(prose) if m.group(0) == "▁" or _outside_a_word(prose, m.start())]
    if found:
        m = found[0]
        return [Finding("bpe-marker", f"{len(found)} byte-level BPE markers, e.g. {excerpt(text, m.start(), m.end())!r}")]
    return []


def _outside_a_word(prose: str, i: int) -> bool:
    """Ġ or Ċ where no Maltese word can hold it: after a letter or digit ("helloĠworld"), or
    after punctuation ("ground.Ċ3.", "done.ĊNext"); a letter named between spaces or quotes is a mention."""
    before = prose[i - 1] if i else " "
    after = prose[i + 1] if i + 1 < len(prose) else " "
    if before.isalnum() or before in "ĠĊ":
        return True
    named = " \t\n\"'`‘’“”«»()[]"
    if after.isalpha() or after in "ĠĊ":
        return after in "ĠĊ" or before not in named + "-'’"      # a Maltese word starts after a space,
                                                                # a quote, or its article's hyphen (il-Ġimgħa)
    return not (before in named and after in named + ".,;:!?")


def _named(text: str, i: int, spans: list[tuple[int, int]]) -> bool:
    """The U+FFFD at i is named, not a letter's lost bytes: nothing of a word touches it, and it
    sits in code, inline code or quotes."""
    j, k = i, i + 1
    while j > 0 and text[j - 1] == "\ufffd":
        j -= 1
    while k < len(text) and text[k] == "\ufffd":
        k += 1
    before, after = text[j - 1:j], text[k:k + 1]
    if before.isalnum() or after.isalnum():
        return False
    return any(a <= i < b for a, b in spans) or before in QUOTES and after in QUOTES


def replacement_chars(text: str, spans: list[tuple[int, int]], prompt: str = "") -> list[Finding]:
    """U+FFFD stands where bytes were not valid UTF-8, unless the text names the character: set
    apart in code, inline code or quotes (anywhere set apart, when the prompt holds one too)."""
    bad = [i for i, ch in enumerate(text) if ch == "\ufffd"
           and not (_named(text, i, spans) or "\ufffd" in prompt and _named(text, i, [(0, len(text))]))]
    if not bad:
        return []
    return [Finding("replacement-char", f"{len(bad)} U+FFFD: {excerpt(text, bad[0], bad[0] + 1)!r}")]


def control_chars(text: str) -> list[Finding]:
    rtl = any(script_of(c) in RTL for c in text)
    bad = []
    for i, ch in enumerate(text):
        cp, cat = ord(ch), unicodedata.category(ch)
        if cat == "Cc" and ch not in "\t\n\r" or cat in ("Co", "Cs") or 0xFDD0 <= cp <= 0xFDEF or cp & 0xFFFE == 0xFFFE \
                or cat == "Cf" and cp not in ALLOWED_FORMAT and not (rtl and cp in DIRECTION_MARKS):
            bad.append(i)
    if bad:
        i = bad[0]
        return [Finding("control-char", f"{len(bad)} control, private-use or invisible characters, first "
                                        f"U+{ord(text[i]):04X} {unicodedata.name(text[i], 'unnamed')}: "
                                        f"{excerpt(text, i, i + 1)!r}")]
    return []


def _utf8_sequences(data: bytes) -> str:
    """The characters that whole UTF-8 sequences among the bytes decode to (a run cut short, or a
    byte the wrong codec could not show, still leaves the rest readable)."""
    out, i = [], 0
    while i < len(data):
        b = data[i]
        n = 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
        chunk = data[i:i + n]
        if n and len(chunk) == n and all(0x80 <= c <= 0xBF for c in chunk[1:]):
            try:
                out.append(chunk.decode("utf-8"))
                i += n
                continue
            except UnicodeError:
                pass
        i += 1
    return "".join(out)


def rarity(ch: str) -> int:
    """A language-model-free frequency class of a Chinese character, from where GB2312 puts it:
    0 for its first level (the 3,755 most used hanzi) and ASCII, 1 for its second level (3,008
    rarer hanzi) and its symbol rows, 2 for what only GBK, or no Chinese codec, holds."""
    try:
        b = ch.encode("gb2312")
    except UnicodeError:
        return 2
    return 0 if len(b) == 1 or 0xB0 <= b[0] <= 0xD7 else 1


def _gbk_mojibake(run: str) -> str | None:
    """What the run says when its GBK bytes are read as the UTF-8 they were, when that reading is
    positive evidence: it covers most of the bytes, holds two CJK characters or more, and they are far
    more common characters than the run's (ordinary Chinese, all first-level, never qualifies)."""
    try:
        data = run.encode("gbk")
    except UnicodeError:
        return None
    fixed = _utf8_sequences(data)
    cjk = [c for c in fixed if script_of(c) in CJK]
    if len(cjk) < 2 or len(fixed.encode()) < 0.6 * len(data):
        return None
    before = sum(map(rarity, run)) / len(run)
    after = sum(map(rarity, cjk)) / len(cjk)
    return fixed if before >= 0.8 and after <= 0.3 else None


GBK_RUN = re.compile(r"[^\x00-\x7f\s，。、；：！？“”‘’「」『』（）《》【】]{2,}")
UNINITIALISED = re.compile(r"锟斤拷|烫{3,}|屯{3,}")


def mojibake(text: str, spans: list[tuple[int, int]] = ()) -> list[Finding]:
    """UTF-8 read in the wrong codec, outside what the text sets apart as a sample (in code,
    inline code or quotes: an answer about encodings shows mojibake on purpose)."""
    def sample(m: re.Match) -> bool:
        return any(a <= m.start() and m.end() <= b for a, b in spans) or _quoted(text, m.start(), m.end())

    for m in MOJIBAKE.finditer(text):
        if sample(m):
            continue
        try:
            fixed = _utf8_sequences(m.group(0).encode("cp1252"))
        except UnicodeError:
            continue
        if fixed:
            return [Finding("mojibake", f"{m.group(0)!r} is UTF-8 read as Windows-1252 ({fixed!r})")]
    m = next((m for m in UNINITIALISED.finditer(text) if not sample(m)), None)
    if m:
        return [Finding("mojibake", f"{m.group(0)!r}: U+FFFD's bytes, or uninitialised memory, read as GBK")]
    for m in GBK_RUN.finditer(text):
        fixed = None if sample(m) else _gbk_mojibake(m.group(0))
        if fixed:
            return [Finding("mojibake", f"{m.group(0)[:12]!r} is UTF-8 read as GBK ({fixed[:8]!r})")]
    return []


def markup(prose: str, prompt: str) -> list[Finding]:
    if MARKUP_INVITED.search(prompt):
        return []
    for m in TAG.finditer(prose):
        closing, name = m.group(1), m.group(2).lower()
        if name not in HTML_ELEMENTS:
            continue
        if name in MARKDOWN_HTML and (name == "br" or (f"</{name}>" in prose and f"<{name}" in prose)):
            continue
        before = prose[m.start() - 1] if m.start() else " "
        if not closing and not m.group(3) and before.isalnum() and name not in ("br", "hr", "p", "div", "span"):
            continue      # List<String>, vector<T>: a generic, not a tag
        return [Finding("markup-fragment", f"{m.group(0)[:40]!r}: {excerpt(prose, m.start(), m.end())!r}")]
    m = ENTITY.search(prose)
    if m:
        return [Finding("markup-fragment", f"character reference {m.group(0)!r}: {excerpt(prose, m.start(), m.end())!r}")]
    return []
