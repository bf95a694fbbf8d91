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
from .scripts import script_of

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
BPE_MARKER = re.compile(r"(?<=[^\W_])[ĠĊ]|▁(?=[^\W\d_])")
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


def special_tokens(text: str, prose: str, prompt: str) -> list[Finding]:
    for m in SPECIAL_TOKEN.finditer(prose):
        if m.group(0) not in prompt:
            return [Finding("special-token", f"leaked {m.group(0)!r}: {excerpt(text, m.start(), m.end())!r}")]
    tags = [m for m in THINK.finditer(prose) if m.group(0) not in prompt]
    if tags:
        expected = [t.group(0) for t in tags] in (["<think>", "</think>"], ["</think>"])
        leading = not re.search(r"\S", prose[:tags[0].start()]) or tags[0].group(0) == "</think>" and len(tags) == 1
        if not (expected and leading):
            return [Finding("special-token", f"think tag {tags[-1].group(0)!r} out of place: "
                                             f"{excerpt(text, tags[-1].start(), tags[-1].end())!r}")]
    return []


def bpe_markers(text: str, prose: str) -> list[Finding]:
    prose = SPECIAL_TOKEN.sub(lambda m: " " * len(m.group(0)), prose)     # DeepSeek's own tokens hold ▁
    found = BPE_MARKER.findall(prose)
    if found:
        m = BPE_MARKER.search(prose)
        return [Finding("bpe-marker", f"{len(found)} byte-level BPE markers, e.g. {excerpt(text, m.start(), m.end())!r}")]
    return []


def control_chars(text: str) -> list[Finding]:
    findings = []
    if "\ufffd" in text:
        i = text.index("\ufffd")
        findings.append(Finding("replacement-char", f"{text.count(chr(0xFFFD))} U+FFFD: {excerpt(text, i, i + 1)!r}"))
    rtl = any(script_of(c) in RTL for c in text)
    bad = []
    for i, ch in enumerate(text):
        cp, cat = ord(ch), unicodedata.category(ch)
        if cat == "Cc" and ch not in "\t\n\r" or cat in ("Co", "Cs") or 0xFDD0 <= cp <= 0xFDEF or cp & 0xFFFE == 0xFFFE \
                or cat == "Cf" and cp not in ALLOWED_FORMAT and not (rtl and cp in DIRECTION_MARKS):
            bad.append(i)
    if bad:
        i = bad[0]
        findings.append(Finding("control-char", f"{len(bad)} control, private-use or invisible characters, first "
                                                f"U+{ord(text[i]):04X} {unicodedata.name(text[i], 'unnamed')}: "
                                                f"{excerpt(text, i, i + 1)!r}"))
    return findings


def _utf8_sequences(run: str) -> str:
    """The characters that whole UTF-8 sequences among the run's Windows-1252 bytes decode to
    (a run cut short, or a byte 1252 cannot show, still leaves the rest readable)."""
    try:
        data = run.encode("cp1252")
    except UnicodeError:
        return ""
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


def _undoes(run: str, codec: str) -> str | None:
    try:
        fixed = run.encode(codec).decode("utf-8")
    except UnicodeError:
        return None
    return fixed if fixed != run and any(ord(c) > 127 for c in fixed) else None


def mojibake(text: str) -> list[Finding]:
    for m in MOJIBAKE.finditer(text):
        fixed = _utf8_sequences(m.group(0))
        if fixed:
            return [Finding("mojibake", f"{m.group(0)!r} is UTF-8 read as Windows-1252 ({fixed!r})")]
    for m in re.finditer(r"[\u4e00-\u9fff]{2,}", text):
        run = m.group(0)
        for k in range(len(run) - 1):
            fixed = _undoes(run[k:k + 3], "gbk") or _undoes(run[k:k + 2], "gbk")
            if fixed and ("\ufffd" in fixed or any(unicodedata.category(c) in ("Co", "Cc", "Cn") for c in fixed)):
                return [Finding("mojibake", f"{run[k:k + 3]!r} is UTF-8 read as GBK ({fixed!r})")]
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
