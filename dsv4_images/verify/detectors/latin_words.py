"""Latin words in the prose of a non-Latin language that are not the terms that language borrows.

Principle. Chinese (or Japanese, Russian ...) prose borrows Latin-script *terms*: names, units,
acronyms, identifiers, product and library names ("使用 pip 安装 numpy", "CPU 和 GPU"). A term is a
content word or a name; it is never a function word. So, outside code, inline code and math:

- a run of lowercase English words holding function words inside a host paragraph ("从数据中 the
  patterns and 规律") is English prose spliced into the sentence, unless quoted, bracketed or
  labelled; a paragraph wholly in English is a choice of language, not a fragment;
- a single lowercase word of a closed class (articles, pronouns, prepositions, conjunctions,
  auxiliaries, and adverbs like "again") of English or another Latin-script language (German,
  French, Spanish, Italian, Portuguese), standing next to host letters, is a stray token: such
  words name nothing, so no host language borrows them ("叶绿素 the 吸收光能", "x = 3 wieder 代入").
  Words that are also programming keywords or common identifiers (for, if, in, and, or, not, is,
  as, then, die, del, sin, com ...) are left out: Chinese prose names those as terms.
A word set off by quotes, brackets or a label, touching code punctuation (a path, a call), or in
a sentence that names its language, is a mention, not text; so is any when the prompt names it.
"""

from __future__ import annotations

import re

from . import Finding, excerpt
from .scripts import sentence_bounds, named_scripts, script_of, set_off

# English function words that are not also common programming keywords or identifiers, and the
# wider set used when several Latin words already read as a phrase.
ENGLISH_ONLY = set("""the of are was were been being which their there these those would could should because
although however therefore into onto about than then them they we our you your its has have had does did
very also such both either neither whose whom""".split())
FUNCTION_WORDS = ENGLISH_ONLY | set("a an and or but if so to in on at by for with from as is be it that this not no"
                                    .split())
# Closed-class words of Latin-script languages that never serve as borrowed terms (see above).
CLOSED_CLASS = (ENGLISH_ONLY - {"then", "has", "have", "had", "does", "did"}) | set("""
wieder nicht auch noch aber oder und der das ist sind wird werden wurde dann denn wenn weil schon sehr immer nur
jetzt hier dort über für zwischen nach bei durch gegen ohne eine einen einem einer ein sich
les une est sont avec dans mais donc aussi très alors puis encore toujours sans chez leur nous vous elle ils
cette ces
los las una para pero muy también porque cuando donde entonces otra otro vez ahora siempre está están como
della degli sono anche perché ancora molto sempre questo questa nella alla
não muito então ainda pelo pela""".split())
LETTER = "A-Za-zÀ-ÖØ-öø-ÿ"       # Latin-1 letters, without × and ÷
LATIN_PHRASE = re.compile(rf"[{LETTER}][{LETTER}'’]*(?:[ ,]+[{LETTER}][{LETTER}'’]*)*")
CODE_EDGE_BEFORE = "._/\\=#@<-"
CODE_EDGE_AFTER = "._/\\(=[<>-"


def _neighbour(prose: str, i: int, step: int) -> str:
    """The first character that is not a space or tab, from i in direction step ("" at the ends)."""
    while 0 <= i < len(prose) and prose[i] in " \t":
        i += step
    return prose[i] if 0 <= i < len(prose) else ""


def _stray(prose: str, start: int, end: int, word: str, host: set[str]) -> bool:
    if word not in CLOSED_CLASS:
        return False
    return script_of(_neighbour(prose, start - 1, -1)) in host or script_of(_neighbour(prose, end, 1)) in host


def latin_prose_fragments(prose: str, host: set[str], named: set[str] = frozenset()) -> list[Finding]:
    """English prose, or a stray function word, in a paragraph of a non-Latin host. `named`: the
    scripts the prompt names ("英语里 the 和 a 有什么区别"): their words are the topic, not strays."""
    if "latin" in host or "latin" in named:
        return []
    findings = []
    for m in LATIN_PHRASE.finditer(prose):
        words = re.findall(rf"[{LETTER}'’]+", m.group(0))
        lower = [w for w in words if w.islower()]
        strong = [w for w in lower if w in ENGLISH_ONLY]
        weak = [w for w in lower if w in FUNCTION_WORDS]
        content = [w for w in words if w.lower() not in FUNCTION_WORDS]
        if content and all(w[0].isupper() for w in content):
            continue      # Title Case or acronyms: a name or term ("Out of Memory")
        single = len(words) == 1 and words[0].islower() and _stray(prose, m.start(), m.end(), words[0], host)
        if not (single or strong and len(words) >= 2 or len(words) >= 3 and len(weak) >= 1 and len(lower) >= 3):
            continue
        p_left = prose.rfind("\n\n", 0, m.start()) + 1
        p_right = prose.find("\n\n", m.end())
        if not any(script_of(c) in host for c in prose[p_left:len(prose) if p_right < 0 else p_right]):
            continue      # a paragraph of its own in English is a choice of language, not a fragment
        before = prose[m.start() - 1] if m.start() else " "
        after = prose[m.end()] if m.end() < len(prose) else " "
        if before in CODE_EDGE_BEFORE or after in CODE_EDGE_AFTER \
                or set_off(prose, m.start(), m.end(), short=len(words) <= 6):
            continue      # a path, an identifier, a call; a quoted, bracketed or labelled term
        if single and "latin" in named_scripts(prose[slice(*sentence_bounds(prose, m.start(), m.end()))]):
            continue      # "英语的冠词 the 表示特指": a sentence naming the language discusses its words
        what = f"the stray word {m.group(0)!r}" if single else f"English words {m.group(0)!r}"
        where = excerpt(prose, m.start(), m.end())
        findings.append(Finding("script-mixing", f"{what} inside {'/'.join(sorted(host))} prose: {where!r}"))
    return findings
