"""Letters of a writing system the answer's language does not use.

Principle. Every letter (and script-specific mark) has a Unicode script, read from its Unicode
name ("CYRILLIC SMALL LETTER A", "CJK UNIFIED IDEOGRAPH-5B66", "HANGUL SYLLABLE GA"; letters
named without a script, such as MICRO SIGN or the mathematical alphabets, belong to none). The
answer's *host* scripts are those of its language: the `lang` code when given and known, else the
dominant script of the prompt (any CJK letters make it a CJK prompt), else of the answer itself.
The scripts the prompt uses or names ("in Japanese", "俄语") are invited too. Code, inline code
and math are not read (see markdown.py). Over the remaining prose, a letter of any other script
is foreign, and a single foreign letter counts when it sits where a word of the text's own
language should be:

- glued to a host letter inside one word of a spaced script ("resultат", "the result是"): always;
- a standalone run of foreign words inside a host sentence ("..., 所以我们 get b = 6"): unless
  the text sets it off as a name or term: enclosed in brackets, quotes (any style, 「」《》«»
  included) or emphasis, alone in a table cell, after a label colon or dash, alone on a short
  line, or in a sentence that names its language ("the Russian word ..."). Once the answer sets
  off a script so, it is discussing that script: its other whole words are mentions too;
- Greek is also the alphabet of mathematics: a run of one or two Greek letters is a symbol (π, Δx,
  μs, μmol, 9π) unless it sits inside a word: letters on both sides ("calcuλate"), or glued to
  three or more letters of a spaced host script ("σort").

Latin is the one script every language uses for terms, names, units, variables and identifiers,
so Latin letters in a CJK or other non-Latin host are never foreign by themselves; Latin *words*
that cannot be terms are judged in latin_words.py. Limits: a single stray Latin letter inside
Chinese cannot be told from a variable and is not flagged; a foreign word the text sets off is
trusted.
"""

from __future__ import annotations

import unicodedata

from . import Finding, excerpt
from .languages import (CJK, LANG_SCRIPTS, LATIN_LANGS, UNSPACED, counts, host_scripts,  # noqa: F401  (re-exported)
                        named_scripts, script_of, scripts_in)

OPENERS = "([{（【〔［｛<《〈「『\"'“‘«‹*_"
CLOSERS = ")]}）】〕］｝>》〉」』\"'”’»›*_"
LABEL_MARKS = ":：—–-→|"
JOINERS = " ·・'’-‐"
def sentence_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    left = max(text.rfind(c, 0, start) for c in ".!?。！？\n") + 1
    rights = [i for i in (text.find(c, end) for c in ".!?。！？\n") if i >= 0]
    return left, min(rights) if rights else len(text)


SEPARATORS = ",，;；、/"
SENTENCE_END = ".!?。！？"
DASHES = "—–"


def _delimiter(prose: str, i: int) -> bool:
    c = prose[i]
    if c in OPENERS or c in CLOSERS or c in SEPARATORS or c in SENTENCE_END or c in LABEL_MARKS or c in DASHES \
            or c == "\n":
        return c != "-" or (0 < i < len(prose) - 1 and prose[i - 1] == " " and prose[i + 1] == " ") \
            or prose[:i].rstrip(" \t").endswith("\n") or not prose[:i].strip()
    return False


def _segment(prose: str, start: int, end: int) -> tuple[str, str, bool]:
    """The delimiters left and right of a run ("" for the text's ends), and whether the run is
    the only wording between them (digits and punctuation may join it)."""
    own, left, right = True, "", ""
    i = start - 1
    while i >= 0 and not _delimiter(prose, i):
        own = own and not script_of(prose[i])
        i -= 1
    left = prose[i] if i >= 0 else "\n"
    j = end
    while j < len(prose) and not _delimiter(prose, j):
        own = own and not script_of(prose[j])
        j += 1
    right = prose[j] if j < len(prose) else "\n"
    if left in OPENERS and right not in CLOSERS:        # "(東京, Tōkyō)": the bracket closes later on the line
        line_end = prose.find("\n", j)
        rest = prose[j:len(prose) if line_end < 0 else line_end]
        right = CLOSERS[OPENERS.index(left)] if CLOSERS[OPENERS.index(left)] in rest else right
    return left, right, own


def set_off(prose: str, start: int, end: int, short: bool) -> bool:
    """The run is a name or term the text sets apart: inside a bracket, quote or emphasis pair on
    its line, or as the only wording in its own table cell, after a label mark (': ', ' - ', '→'),
    or alone on a (short) line."""
    left, right, own = _segment(prose, start, end)
    if left in OPENERS and right == CLOSERS[OPENERS.index(left)]:
        return True       # whatever the brackets or quotes hold is the name ("（ノルウェイの森）")
    if not own:
        return False
    if left == "|" and right == "|":
        return True
    if left in LABEL_MARKS or left in DASHES or left == "-":
        return True
    return short and left == "\n" and right in "\n" + SENTENCE_END + CLOSERS


def _glued(text: str, start: int, end: int, host: set[str]) -> bool:
    """A foreign run joined without a break to a letter of a spaced host script."""
    for i in (start - 1, end):
        if 0 <= i < len(text):
            s = script_of(text[i])
            if s and s in host and s not in UNSPACED and s not in CJK:
                return True
    return False


def _runs(prose: str, allowed: set[str]):
    """(start, end, script) of each run of letters of one non-allowed script; runs of one script
    joined by spaces or name punctuation count as one (a multi-word name)."""
    i, n = 0, len(prose)
    while i < n:
        s = script_of(prose[i])
        if not s or s in allowed:
            i += 1
            continue
        j = i + 1
        while j < n:
            t = script_of(prose[j])
            if t == s or (t is None and unicodedata.category(prose[j])[0] == "M"):
                j += 1
                continue
            k = j
            while k < n and prose[k] in JOINERS:
                k += 1
            if k > j and k < n and script_of(prose[k]) == s:
                j = k
                continue
            break
        yield i, j, s
        i = j


GREEK_UNIT_TAILS = {"mol", "sec", "rad", "max", "min"}


def _letters_before(prose: str, i: int) -> str:
    j = i
    while j > 0 and script_of(prose[j - 1]):
        j -= 1
    return prose[j:i]


def _letters_after(prose: str, i: int) -> str:
    j = i
    while j < len(prose) and script_of(prose[j]):
        j += 1
    return prose[i:j]


def foreign_letters(prose: str, host: set[str], invited: set[str]) -> list[Finding]:
    allowed = host | invited
    if not host & {"latin"}:
        allowed = allowed | {"latin"}
    findings, standalone, presented = [], [], set()
    for start, end, script in _runs(prose, allowed):
        run = prose[start:end]
        letters = sum(1 for c in run if script_of(c))
        left = script_of(prose[start - 1]) if start else None
        right = script_of(prose[end]) if end < len(prose) else None
        if script == "greek" and letters <= 2:
            before, after = _letters_before(prose, start), _letters_after(prose, end)
            sandwiched = before and after and left not in CJK and right not in CJK
            in_word = any(len(w) >= 3 and w.lower() not in GREEK_UNIT_TAILS and script_of(w[0]) in host - CJK
                          for w in (before, after))
            if sandwiched or in_word:
                findings.append(Finding("script-mixing",
                                        f"greek {run!r} inside a word: {excerpt(prose, start, end)!r}"))
            continue
        if _glued(prose, start, end, host):
            findings.append(Finding("script-mixing", f"{script} {run!r} glued to a {'/'.join(sorted(host))} word: "
                                                     f"{excerpt(prose, start, end)!r}"))
            continue
        s_left, s_right = sentence_bounds(prose, start, end)
        if script in named_scripts(prose[s_left:s_right]) \
                or letters <= 60 and set_off(prose, start, end, short=letters <= 30):
            presented.add(script)
            continue
        standalone.append((start, end, script))
    # A script the answer presents deliberately somewhere (a set-off name, a quoted line) is one it
    # is discussing: its other whole words are mentions too. Letters glued into words never are.
    for start, end, script in standalone:
        if script not in presented:
            findings.append(Finding("script-mixing", f"{script} {prose[start:end]!r} in "
                                                     f"{'/'.join(sorted(host))} prose: {excerpt(prose, start, end)!r}"))
    return findings
