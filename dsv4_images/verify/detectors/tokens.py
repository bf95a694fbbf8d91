"""Pieces of the tokenizer that reached the text, characters that are not text, and stray markup.

Special and control tokens. A chat model's special tokens are never text: every common tokenizer
family writes them in a shape ordinary prose does not use, so the shapes are the rule, not a list
of token names: DeepSeek `<｜...｜>` (fullwidth bars), ChatML / GPT / Llama 3 / Phi `<|...|>`
(`<|im_start|>`, `<|eot_id|>`, `<|start_header_id|>`), Llama 2 / Mistral `[INST]`, `[/INST]`,
`<<SYS>>`, `[TOOL_CALLS]`, Gemma `<start_of_turn>`, SentencePiece `<s>`, `</s>`, `<unk>`, `<pad>`,
T5 `<extra_id_N>`, BERT `[CLS]`, `[SEP]`, `[MASK]`, tool-call tags `<tool_call>`, and byte-fallback
tokens `<0x0A>`; also a token cut in half (`<｜` or `｜>`, `<|im_end` without its bar). One counts,
anywhere outside code, unless the prompt quotes it or quotes hold it alone (a token named, not
emitted). Think tags: a server with a reasoning parser moves the reasoning out of the content, so
no think tag belongs in an answer. Only when the caller says the server sends raw reasoning
(`reasoning_in_content`) is one leading block expected (`<think>...</think>` at the start, or a
lone `</think>` when the template opened it).

Byte-level BPE markers. GPT-2-style tokenizers write a space as Ġ and a newline as Ċ; SentencePiece
writes a space as ▁. They leak when decoding skips the byte mapping. Ġ and Ċ are also Maltese
letters, so they count only where no Maltese word can put them: right after a letter or digit
("helloĠworld"), or after punctuation ("ground.Ċ3.", "done.ĊNext"); a Maltese word starts after a
space, a quote or its article's hyphen (il-Ġimgħa). ▁ counts when a letter follows it (a
sparkline ▁▂▃ is followed by blocks).

Control characters: C0/C1 controls other than tab and newlines, private-use code points,
surrogates, noncharacters, and invisible format characters except the joiners that emoji and
Indic or Persian spelling need (ZWJ, ZWNJ, the emoji tag characters) and the direction marks when
the text holds a right-to-left script. Unassigned code points are not flagged: Python's Unicode
tables may predate a new emoji. U+FFFD and mojibake: see encoding.py.

Markup fragments: HTML elements (the tag names the HTML standard defines, written as a tag:
`<div>`, `</span>`, `<a href="...">`, `<br/>`) and character references (`&nbsp;`, `&#39;`) in
prose, when the prompt does not ask about markup. Markdown lets an answer use HTML for what it
cannot say itself, so `<br>`, and balanced `<sup>`, `<sub>`, `<kbd>`, `<details>`, `<summary>`,
are allowed. Comparisons ("a<b and b>c") and generics ("List<String>") are not tags.
"""

from __future__ import annotations

import re
import unicodedata

from . import Finding, excerpt, quoted
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
BPE_MARKER = re.compile(r"[ĠĊ]|▁(?=[^\W\d_])")
ALLOWED_FORMAT = {0x200C, 0x200D} | set(range(0xE0020, 0xE0080))
DIRECTION_MARKS = {0x200E, 0x200F, 0x061C, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}
RTL = {"hebrew", "arabic", "syriac", "thaana", "nko"}
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


def special_tokens(text: str, prose: str, prompt: str, reasoning_in_content: bool = False) -> list[Finding]:
    for m in SPECIAL_TOKEN.finditer(prose):
        if m.group(0) not in prompt and not quoted(prose, m.start(), m.end()):
            return [Finding("special-token", f"leaked {m.group(0)!r}: {excerpt(text, m.start(), m.end())!r}")]
    tags = [m for m in THINK.finditer(prose) if m.group(0) not in prompt and not quoted(prose, m.start(), m.end())]
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
