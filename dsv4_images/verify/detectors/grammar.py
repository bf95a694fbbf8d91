"""Words the grammar requires that are missing: the mark of tokens dropped from a stream.

Principle. Some words cannot stand where nothing follows them. In English an article or a
possessive determiner introduces a noun and "than" a comparison, so none of them can end a sentence
or stand before a comma ("instead of raising an.", "returns the, then"); a coordinating
conjunction cannot end a sentence ("eggs, milk and."). A function word said twice in a row
("boils at at sea level", "the the") is one where a word between them was lost ("that that",
"had had" and "is is" are grammatical and left out). In Chinese, a two-character preposition or
connective that governs what follows (对于 以及 导致 使得 由于 按照 除了) cannot stand right
before a clause mark ("导致，"), and a pair of CJK quotes or brackets cannot be empty ("称为“”")
unless its clause is about punctuation ("书名号《》").
Words quoted, hyphenated or joined to a slash are mentions ("the word 'the'", "either/or"), and
code, inline code and math are not read. Dropped words that leave grammatical text ("然后使用 pip
这个库") cannot be seen this way; the answer checks catch those that change the answer.
"""

from __future__ import annotations

import re

from . import Finding, excerpt

NOUN_INTRODUCERS = "the|an|my|your|our|their|its|whose|than"
ENDLESS = re.compile(rf"(?<![\w'\"`‘’“”/-])(?:(?:{NOUN_INTRODUCERS})(?=[,;:.!?](?:\s|$))"
                     rf"|(?:and|or|nor)(?=[.!?](?:\s|$)))", re.M)
DOUBLED = re.compile(r"(?<![\w'\"`‘’“”/-])(the|an|of|to|at|for|with|from|by|and|or|but|than|into|onto)"
                     r" \1(?![\w'\"`‘’“”/-])", re.I)
ZH_GOVERNING = re.compile(r"(?:对于|以及|导致|使得|由于|按照|除了)(?=[，。；：！？])")
EMPTY_PAIR = re.compile(r"“”|「」|『』|《》|（）|【】")


def _words_before(prose: str, i: int) -> int:
    start = max(prose.rfind(c, 0, i) for c in ".!?\n") + 1
    return len(re.findall(r"[A-Za-z]+", prose[start:i]))


def _names_punctuation(prose: str, m: re.Match) -> bool:
    """"书名用书名号《》": a clause about punctuation shows the marks empty on purpose."""
    start = max(prose.rfind(c, 0, m.start()) for c in "，。；！？\n") + 1
    ends = [i for i in (prose.find(c, m.end()) for c in "，。；！？\n") if i >= 0]
    clause = prose[start:min(ends) if ends else len(prose)]
    return "号" in clause or "标点" in clause or "符" in clause


def dropped_words(prose: str) -> list[Finding]:
    for m in ENDLESS.finditer(prose):
        if _words_before(prose, m.start()) >= 2:
            return [Finding("dropped-word", f"{m.group(0)!r} with nothing after it: "
                                            f"{excerpt(prose, m.start(), m.end() + 1)!r}")]
    m = DOUBLED.search(prose)
    if m:
        return [Finding("dropped-word", f"{m.group(0)!r}, a word lost between: {excerpt(prose, m.start(), m.end())!r}")]
    m = ZH_GOVERNING.search(prose) or next((m for m in EMPTY_PAIR.finditer(prose) if not _names_punctuation(prose, m)),
                                           None)
    if m:
        return [Finding("dropped-word", f"{m.group(0)!r} governs nothing: {excerpt(prose, m.start(), m.end())!r}")]
    return []
