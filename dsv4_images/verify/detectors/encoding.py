"""Bytes that were not decoded as the UTF-8 they were: U+FFFD and mojibake.

U+FFFD (the replacement character) stands where bytes were not valid UTF-8. It counts unless the
text names the character: nothing of a word touches it and it sits in code, inline code or quotes
(`�`, "�"), or, when the prompt holds one, anywhere set apart. One glued to letters (首�, pri�nt)
replaced a letter's bytes, in prose or in code.

Mojibake: UTF-8 bytes decoded as Windows-1252 ("Ã©", "æœºå™¨") or as GBK ("鏈哄櫒瀛︿範",
"锟斤拷"). It needs positive evidence, never a guess from ordinary text:
- Windows-1252: a run of Latin-1 letters re-encoded gives whole UTF-8 sequences (ordinary accented
  text never does);
- GBK: the run's GBK bytes read as UTF-8 cover most of its bytes, give two CJK characters or more,
  and those are far more common characters than the run's own, by a language-model-free frequency
  class: GB2312's first level (the 3,755 most used hanzi) against its second level and what only
  GBK holds. Ordinary Chinese is first-level throughout and never qualifies, however it re-reads;
- "锟斤拷" (two U+FFFD read as GBK) and runs of 烫 or 屯 (uninitialised memory, 0xCC/0xCD bytes).
A sample the text sets apart in code, inline code or quotes is a mention (an answer about
encodings shows mojibake on purpose).
"""

from __future__ import annotations

import re

from . import QUOTES, Finding, excerpt, quoted
from .scripts import CJK, script_of

CP1252_EXTRA = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
MOJIBAKE = re.compile(rf"[\u00c2-\u00f4][\u00a0-\u00bf{CP1252_EXTRA}]{{1,3}}"
                      rf"(?:[\u00c2-\u00f4][\u00a0-\u00bf{CP1252_EXTRA}]{{1,3}})*")


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
        return any(a <= m.start() and m.end() <= b for a, b in spans) or quoted(text, m.start(), m.end())

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
