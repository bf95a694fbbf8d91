"""Token and symbol salad: prose made of pieces that are not words.

Principle. A corrupted decoder emits vocabulary pieces out of order: sub-word fragments, code
fragments and symbols strung together. A Latin-script word of prose has a shape: letters in one
case pattern (lower, Capitalised, UPPER, or camelCase with case changing at most every other
letter), digits where units, ordinals, versions and identifiers put them (at most two changes
between letters and digits: 10ms, sha256, gpt4o, base64Payload), and no more than one symbol
inside it (don't, e-mail, km/h, 3.14). A whitespace token that breaks the shape is junk:

- two or more different symbols in it that are neither word punctuation nor an expression
  ("xq_!@z", "tr%$w", "=|Vb"; `f(x)=x^2+1`, `arr[::-1]`, `a<=b` are expressions, C++ one symbol),
  or a doubled code symbol stuck to letters outside an expression ("$$nil", "##deprec", "0xff;;");
- letters and digits alternating three times or more ("m4r1a", "1z1z");
- case flipping on half of its letters or more, in words of four letters or more ("bEcAuSe");
- five letters or more with no vowel, not an acronym ("qwrtp").

Real words in no order show where English grammar is strict: an article or possessive determiner
followed by another determiner, a preposition or an auxiliary ("the of", "their was").

Tokens are split at whitespace and at CJK characters, which are not tokens themselves (CJK writes
no spaces: Latin junk glued into Chinese is a token of its own). Prose is salad when junk is dense: at least 30% of
ten or more tokens, or three junk tokens within
five consecutive ones. Symbol salad shows in brackets: a paragraph of prose (table rows aside)
with three or more brackets that close nothing or never close, after
enumerators ("a)", "2)"), emoticons and intervals ("[0, 1)") are set aside. Code, inline code and
math are not read. Other real words in a meaningless order are not salad by shape; the answer
checks catch those.
"""

from __future__ import annotations

import re

from . import Finding
from .scripts import CJK, script_of

VOWELS = set("aeiouyAEIOUYàáâäèéêëìíîïòóôöùúûüÿ")
EDGE = ".,;:!?\"'()[]{}<>*_`~“”‘’«»…。，、；：！？（）【】《》"
WORD_PUNCT = set("-'’_/.,")
DOUBLED = re.compile(r"([$#@%^&=|\\;<>])\1")
EXPRESSION = re.compile(r"[\w.\[\](){}:,=+\-*/<>!%&|^~'\"²³√×÷≤≥≠≈±∞·]+")


def _alternations(core: str) -> int:
    return max((len(re.findall(r"[^\W\d_]+|\d+", part)) - 1 for part in re.split(r"[-_./]", core) if part), default=0)


def _case_flips(word: str) -> float:
    letters = [c for c in word if c.isalpha()]
    if len(letters) < 4 or word.islower() or word.isupper() or word.rstrip("s").isupper():
        return 0.0
    flips = sum(1 for a, b in zip(letters, letters[1:]) if a.islower() != b.islower())
    return flips / len(letters)


def _expression(core: str) -> bool:
    """Code or math written in prose: identifiers and numbers joined by operators and brackets,
    starting and ending like an operand (f(x)=x^2+1, arr[::-1], a<=b)."""
    if not EXPRESSION.fullmatch(core) or not re.search(r"[()\[\]{}=+^<>*]", core):
        return False
    if not (core[0].isalnum() or core[0] in "([{") or not (core[-1].isalnum() or core[-1] in ")]}'\""):
        return False
    return all(_case_flips(w) < 0.5 for w in re.findall(r"[A-Za-z]+", core))


def junk(token: str) -> bool:
    core = token.strip(EDGE)
    if len(core) < 3 or any(script_of(c) not in (None, "latin") for c in core):
        return False
    if re.fullmatch(r"https?://\S+|[\w.+-]+@[\w.-]+\.\w+|[/~.]?[\w.-]+(?:/[\w.-]+)+/?", core):
        return False      # URLs, e-mail addresses, paths
    if not any(c.isalnum() for c in core):
        return False      # pure symbols (├──, -->, &&) are graphics or operators; brackets are judged below
    symbols = {c for c in core if not c.isalnum() and c not in WORD_PUNCT}
    if len(symbols) >= 2 and not _expression(core):
        return True
    if DOUBLED.search(token) and re.search(r"[^\W_]", token) and not _expression(core):
        return True
    if _alternations(core) >= 3:
        return True
    words = re.findall(r"[^\W\d_]+", core)
    if any(_case_flips(w) >= 0.5 for w in words):
        return True
    return any(len(w) >= 5 and not w.isupper() and not any(c in VOWELS for c in w) for w in words)


ENUMERATOR = re.compile(r"(?:^|\s)(?:[A-Za-z]|\d{1,2}|[ivxIVX]{1,4})$")


def unmatched_brackets(line: str) -> int:
    """Brackets of prose that close nothing or are never closed; ( and [ close each other
    (intervals: [0, 1)), a closer with nothing open after an enumerator ("a)", "2)", "iv)") is
    not a bracket, nor are emoticons."""
    line = re.sub(r"[:;]-?[()\]\[]", " ", line)
    depth, stray = 0, 0
    for i, c in enumerate(line):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth:
                depth -= 1
            elif not (c == ")" and ENUMERATOR.search(line[:i])):
                stray += 1
    return stray + depth


DETERMINERS = {"the", "an", "my", "your", "our", "their"}
NEVER_AFTER_DETERMINER = {"the", "a", "an", "my", "your", "our", "their", "its", "of", "to", "than", "into", "onto",
                          "was", "were", "are", "been", "has", "have", "had", "would", "could", "should", "may", "might",
                          "must", "does", "did", "because", "although", "which", "whose"}
BARE_WORD = re.compile(r"(?<![\w'\"`‘’“”-])[a-z]+(?![\w'\"`‘’“”-])")


def determiner_salad(prose: str) -> list[Finding]:
    """English puts a noun or a modifier after an article or a possessive determiner, never another
    determiner, a preposition, an auxiliary or a subordinator ("the of", "their was"): real words in
    no order. Words quoted or hyphenated are mentions, not text; "a" is left out (it is also a
    variable), and so are words that are also programming keywords (the for loop, the is operator)."""
    for line in prose.splitlines():
        words = [(m.group(0), m.start(), m.end()) for m in BARE_WORD.finditer(line)]
        for (w1, _, e1), (w2, s2, e2) in zip(words, words[1:]):
            if w1 in DETERMINERS and w2 in NEVER_AFTER_DETERMINER and not line[e1:s2].strip():
                return [Finding("token-salad", f"{w1!r} then {w2!r}, an order English does not have: "
                                               f"{' '.join(line[max(0, e1 - 30):e2 + 20].split())!r}")]
    return []


def token_salad(prose: str) -> list[Finding]:
    spaced = "".join(" " if script_of(c) in CJK else c for c in prose)     # CJK writes no spaces
    words = [w for w in spaced.split() if w.strip(EDGE)]
    flags = [junk(w) for w in words]
    total = sum(flags)
    dense = len(words) >= 10 and total / len(words) >= 0.3
    clustered = any(sum(flags[i:i + 5]) >= 3 for i in range(max(1, len(flags) - 4)))
    if total and (dense or clustered):
        shown = " ".join(w for w, f in zip(words, flags) if f)[:60]
        return [Finding("token-salad", f"{total}/{len(words)} tokens read as no word, e.g. {shown!r}")]
    for paragraph in re.split(r"\n\s*\n", prose):
        lines = [line for line in paragraph.splitlines() if not line.lstrip().startswith("|")]
        stray = unmatched_brackets(" ".join(lines))        # a bracket may open on one line and close on the next
        if stray >= 3:
            return [Finding("token-salad", f"{stray} unmatched brackets in one paragraph of prose: "
                                           f"{' '.join(' '.join(lines).split())[:60]!r}")]
    return []


PARTICLES = set("的了地呢吗着过被把是也在和就都不很又还得")
HAN_WORD = re.compile(r"^[\u4e00-\u9fff]{1,4}$")


def spaced_cjk_salad(prose: str) -> list[Finding]:
    """Chinese writes no spaces between words. A sentence of six or more space-separated pieces,
    most of them Han words, where particles that only ever attach to a neighbour (的 了 地 呢 被 ...)
    stand alone at least twice and real words of two characters or more twice, is words emitted in no
    order ("词汇量 也 高速公路 是 的 不 可以"). A list of keywords has no lone particles; a list of
    the particles themselves has no words."""
    for sentence in re.split(r"[。！？\n]", prose):
        pieces = [p.strip(EDGE) for p in sentence.split()]
        han = [p for p in pieces if HAN_WORD.match(p)]
        if len(pieces) < 6 or len(han) * 3 < len(pieces) * 2:
            continue
        lone = [p for p in han if p in PARTICLES]
        words = [p for p in han if len(p) >= 2]
        if len(lone) >= 2 and len(words) >= 2:
            return [Finding("token-salad", f"Chinese words spaced apart in no order, {len(lone)} lone particles: "
                                           f"{' '.join(sentence.split())[:60]!r}")]
    return []
