"""Corruption detectors: generic symptoms for any model, and the tiny model's exact rule.

The generic symptoms are the ones seen in corrupted DeepSeek generations: leaked special tokens
(`<｜begin▁of▁sentence｜>`), the replacement character, letters of a script the prompt did not
invite (CJK or Cyrillic fragments inside English reasoning), HTML fragments, token salad,
degenerate repetition, and empty or cut-off outputs. The prompt's own scripts are allowed, so a
Chinese answer to a Chinese prompt is not "script mixing".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

SYMPTOMS = ("special-token", "replacement-char", "script-mixing", "html-fragment", "token-salad",
            "repetition", "empty", "truncated-without-reason")

SPECIAL_TOKEN = re.compile(
    r"<｜[^｜<>\n]{1,60}｜>"                       # DeepSeek: <｜begin▁of▁sentence｜>, <｜Assistant｜>
    r"|<\|[A-Za-z0-9_▁ .-]{1,40}\|>"               # <|im_start|>, <|endoftext|>, <|reserved_3|>
    r"|</?s>|<(?:pad|unk|mask|bos|eos)>"           # sentencepiece-style
    r"|\[(?:PAD|UNK|CLS|SEP|MASK)\]")
HTML_FRAGMENT = re.compile(
    r"</?(?:div|span|p|br|hr|html|head|body|table|tbody|tr|td|th|ul|ol|li|script|style|a|img|h[1-6]|em|strong|b|i)"
    r"(?:\s[^<>]{0,80})?/?>|&(?:nbsp|lt|gt|amp|quot|apos|#\d{2,5});", re.I)
CHAR_REPEAT = re.compile(r"(.{2,60}?)\1{7,}", re.S)
WORD_REPEAT = re.compile(r"\b(\w+)(?:[\s,.;:]+\1\b){5,}", re.I)
CODE_BLOCK = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.S)
SCRIPTS = (("CJK", "han"), ("HIRAGANA", "kana"), ("KATAKANA", "kana"), ("HANGUL", "hangul"),
           ("CYRILLIC", "cyrillic"), ("ARABIC", "arabic"), ("HEBREW", "hebrew"), ("DEVANAGARI", "devanagari"),
           ("THAI", "thai"), ("GREEK", "greek"), ("LATIN", "latin"))
ALWAYS_ALLOWED = {"latin", "greek"}   # code, numbers and math symbols appear in any language
VOWELS = set("aeiouyAEIOUY")


@dataclass(frozen=True)
class Finding:
    symptom: str
    detail: str

    def __str__(self) -> str:
        return f"{self.symptom}: {self.detail}"


def script_of(ch: str) -> str | None:
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    for prefix, script in SCRIPTS:
        if name.startswith(prefix):
            return script
    return "other"


def scripts_in(text: str) -> set[str]:
    return {s for s in map(script_of, text) if s}


def _unexpected_script(text: str, allowed: set[str]) -> Finding | None:
    runs = re.findall(r"\w+", "".join(ch if (script_of(ch) or "latin") not in allowed else " " for ch in text))
    count = sum(len(r) for r in runs)
    if count >= 2:
        return Finding("script-mixing", f"{count} letters outside {'/'.join(sorted(allowed))}, e.g. {runs[0][:20]!r}")
    return None


def _junk_word(word: str) -> bool:
    """A whitespace-separated token that reads as no word: symbols inside letters, mixed
    letters and digits, random capitalisation, or a long run without vowels."""
    core = word.strip(".,;:!?\"'()[]{}")
    if len(core) < 3 or any(script_of(c) not in (None, "latin") for c in core):
        return False
    letters = [c for c in core if c.isalpha()]
    inner_symbols = sum(1 for c in core[1:-1] if not c.isalnum() and c not in "-'_/")
    if inner_symbols >= 2:
        return True
    if letters and any(c.isdigit() for c in core) and not re.fullmatch(r"\d+(?:st|nd|rd|th|s|k|m|x|am|pm|px|kg|km|cm|mm|g|h)?", core, re.I) \
            and not re.fullmatch(r"[A-Za-z]+\d+|\d+[A-Za-z]", core):
        return True
    if re.search(r"[a-z][A-Z][a-z]*[A-Z]", core) and not re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)+", core):
        return True
    return len(letters) >= 5 and not any(c in VOWELS for c in letters)


def _token_salad(prose: str) -> Finding | None:
    words = prose.split()
    if len(words) < 10:
        return None
    junk = [w for w in words if _junk_word(w)]
    if len(junk) / len(words) >= 0.3:
        return Finding("token-salad", f"{len(junk)}/{len(words)} words read as no word, e.g. {' '.join(junk[:4])!r}")
    return None


def _repetition(text: str) -> Finding | None:
    tail = text[-6000:]
    m = WORD_REPEAT.search(tail)
    if m:
        return Finding("repetition", f"{m.group(1)!r} repeated {len(m.group(0).split())} times in a row")
    for m in CHAR_REPEAT.finditer(tail):
        unit = m.group(1)
        if len(m.group(0)) >= 64 and any(c.isalpha() for c in unit):
            return Finding("repetition", f"{unit[:30]!r} repeated {len(m.group(0)) // len(unit)} times")
    return None


def detect(text: str, *, prompt: str = "", finish_reason: str | None = "stop", completion_tokens: int | None = None,
           max_tokens: int | None = None, allowed_scripts: set[str] | None = None,
           allow_html: bool | None = None) -> list[Finding]:
    """Every generic symptom found in one output (empty list: looks clean)."""
    findings = []
    if not text.strip():
        findings.append(Finding("empty", f"no text (finish_reason={finish_reason})"))
    if finish_reason not in ("stop", "length", "tool_calls"):
        findings.append(Finding("truncated-without-reason", f"finish_reason={finish_reason!r}"))
    elif finish_reason == "length" and completion_tokens is not None and max_tokens and completion_tokens < max_tokens:
        findings.append(Finding("truncated-without-reason", f"finish_reason=length after {completion_tokens} of {max_tokens} tokens"))
    m = SPECIAL_TOKEN.search(text)
    if m and m.group(0) not in prompt:
        findings.append(Finding("special-token", f"leaked {m.group(0)!r}"))
    if "\ufffd" in text:
        findings.append(Finding("replacement-char", f"{text.count(chr(0xFFFD))} U+FFFD characters"))
    allowed = (allowed_scripts or set()) | ALWAYS_ALLOWED | scripts_in(prompt)
    found = _unexpected_script(text, allowed)
    if found:
        findings.append(found)
    if allow_html is None:
        allow_html = bool(re.search(r"html|<[a-z/]", prompt, re.I))
    if not allow_html:
        m = HTML_FRAGMENT.search(CODE_BLOCK.sub(" ", text))
        if m:
            findings.append(Finding("html-fragment", f"{m.group(0)[:40]!r}"))
    salad = _token_salad(CODE_BLOCK.sub(" ", text))
    if salad:
        findings.append(salad)
    repeated = _repetition(text)
    if repeated:
        findings.append(repeated)
    return findings


def rule_findings(prompt_last_token: int, token_ids: list[int]) -> list[Finding]:
    """The tiny model's exact rule: every generated token must be next() of the one before it."""
    from ..in_image.tinymodel import next_token, rule_violations
    bad = rule_violations(prompt_last_token, token_ids)
    if not bad:
        return []
    i = bad[0]
    before = prompt_last_token if i == 0 else token_ids[i - 1]
    return [Finding("rule", f"{len(bad)}/{len(token_ids)} tokens break the rule; first at {i}: "
                            f"{token_ids[i]} after {before}, expected {next_token(before)}")]
