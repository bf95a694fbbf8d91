"""Which writing system a letter belongs to, and which ones a language writes with.

A letter's script is read from its Unicode name ("CYRILLIC SMALL LETTER A", "CJK UNIFIED
IDEOGRAPH-5B66", "HANGUL SYLLABLE GA"); letters named without a script (MICRO SIGN, the
mathematical alphabets) belong to none. A language's scripts come from its code ("zh", "ru"), or
are read from the dominant script of a text; a text that names a language or script ("in
Japanese", "俄语", "德语") invokes its scripts. Used by scripts.py, latin_words.py and the rest.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

NAMED_SCRIPTS = {
    "LATIN": "latin", "CYRILLIC": "cyrillic", "GREEK": "greek", "COPTIC": "coptic", "ARMENIAN": "armenian",
    "GEORGIAN": "georgian", "HEBREW": "hebrew", "ARABIC": "arabic", "SYRIAC": "syriac", "THAANA": "thaana",
    "DEVANAGARI": "devanagari", "BENGALI": "bengali", "GURMUKHI": "gurmukhi", "GUJARATI": "gujarati",
    "ORIYA": "oriya", "TAMIL": "tamil", "TELUGU": "telugu", "KANNADA": "kannada", "MALAYALAM": "malayalam",
    "SINHALA": "sinhala", "THAI": "thai", "LAO": "lao", "TIBETAN": "tibetan", "MYANMAR": "myanmar",
    "KHMER": "khmer", "MONGOLIAN": "mongolian", "ETHIOPIC": "ethiopic", "CHEROKEE": "cherokee",
    "HIRAGANA": "kana", "KATAKANA": "kana", "KATAKANA-HIRAGANA": "kana", "HANGUL": "hangul",
    "BOPOMOFO": "bopomofo", "CJK": "han", "IDEOGRAPHIC": "han", "HENTAIGANA": "kana", "MASU": "han",
    "VIETNAMESE": "han",
}
NO_SCRIPT = {"COMBINING", "VARIATION", "MODIFIER", "MATHEMATICAL", "DOUBLE-STRUCK", "SCRIPT", "BLACK-LETTER",
             "SUPERSCRIPT", "SUBSCRIPT", "VERTICAL", "PLANCK", "TURNED", "FEMININE", "MASCULINE", "MICRO", "CARON",
             "EULER", "OHM", "KELVIN", "ANGSTROM", "ALEF", "BET", "GIMEL", "DALET", "INFORMATION", "ROMAN",
             "MUSICAL", "PHAISTOS", "VEDIC", "ESTIMATED", "NUMERO"}
WIDTH_PREFIXES = ("FULLWIDTH ", "HALFWIDTH ")
CJK = {"han", "kana", "hangul", "bopomofo"}
UNSPACED = {"han", "kana", "bopomofo", "thai", "lao", "khmer", "myanmar", "tibetan"}
LANG_SCRIPTS = {
    "zh": {"han", "bopomofo"}, "ja": {"han", "kana"}, "ko": {"hangul", "han"}, "ru": {"cyrillic"},
    "uk": {"cyrillic"}, "bg": {"cyrillic"}, "sr": {"cyrillic", "latin"}, "el": {"greek"}, "ar": {"arabic"},
    "fa": {"arabic"}, "ur": {"arabic"}, "he": {"hebrew"}, "th": {"thai"}, "hi": {"devanagari"},
    "mr": {"devanagari"}, "ne": {"devanagari"}, "bn": {"bengali"}, "ta": {"tamil"}, "ka": {"georgian"},
    "hy": {"armenian"},
}
LATIN_LANGS = set("""en fr de es it pt nl sv no nb nn da fi is et lv lt pl cs sk sl hr bs hu ro sq tr az uz vi id ms
tl sw ca eu gl ga cy mt la eo af""".split())
# Names of languages and scripts, in English and Chinese: a prompt naming one invites its scripts,
# an answer naming one in a sentence sets off that sentence's words of that script.
LANGUAGE_NAMES = [
    (r"chinese|mandarin|cantonese|hanzi|kanji|pinyin|中文|汉语|漢語|汉字|漢字|普通话|粤语|繁体|简体",
     {"han", "bopomofo"}),
    (r"japanese|hiragana|katakana|kana|日语|日文|日本語|日语|假名|平假名|片假名", {"han", "kana"}),
    (r"korean|hangul|hangeul|韩语|韩文|朝鲜语|韓語|한국어", {"hangul", "han"}),
    (r"russian|ukrainian|bulgarian|serbian|cyrillic|俄语|俄文|乌克兰语|西里尔", {"cyrillic"}),
    (r"greek|希腊语|希腊文|希腊字母", {"greek"}),
    (r"arabic|persian|farsi|urdu|阿拉伯语|阿拉伯文|波斯语", {"arabic"}),
    (r"hebrew|yiddish|希伯来语|希伯来文", {"hebrew"}),
    (r"thai|泰语|泰文", {"thai"}),
    (r"hindi|sanskrit|marathi|nepali|devanagari|印地语|梵语|梵文", {"devanagari"}),
    (r"armenian|亚美尼亚语", {"armenian"}), (r"georgian|格鲁吉亚语", {"georgian"}),
    (r"bengali|孟加拉语", {"bengali"}), (r"tamil|泰米尔语", {"tamil"}),
    (r"english|latin|german|french|spanish|italian|portuguese|dutch|英语|英文|拉丁|德语|德文|法语|法文|西班牙语|"
     r"意大利语|葡萄牙语|荷兰语", {"latin"}), (r"translat\w*|翻译|译成", set()),
]
LANGUAGE_NAME = [(re.compile(rf"(?<![A-Za-z])(?:{p})(?![a-z])", re.I), s) for p, s in LANGUAGE_NAMES]


@lru_cache(maxsize=4096)
def script_of(ch: str) -> str | None:
    """The script of a letter or script-specific mark, from the first word of its Unicode name
    (lower case: "latin", "han", "kana", ...); None for digits, symbols, punctuation, the marks
    all scripts share, and letters that belong to no script (MICRO SIGN, MATHEMATICAL ITALIC X)."""
    category = unicodedata.category(ch)
    if category[0] not in "LM":
        return None
    name = unicodedata.name(ch, "")
    for prefix in WIDTH_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    first = name.split(" ", 1)[0]
    if not first or first in NO_SCRIPT:
        return None
    return NAMED_SCRIPTS.get(first, first.lower())


def scripts_in(text: str) -> set[str]:
    return {s for s in map(script_of, text) if s}


def counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for ch in text:
        s = script_of(ch)
        if s:
            out[s] = out.get(s, 0) + 1
    return out


def host_scripts(lang: str | None, prompt: str, answer_prose: str) -> set[str]:
    """The scripts of the answer's language (see the module docstring)."""
    code = (lang or "").lower().replace("_", "-").split("-")[0]
    if code in LANG_SCRIPTS:
        return set(LANG_SCRIPTS[code])
    if code in LATIN_LANGS:
        return {"latin"}
    for source in (prompt, answer_prose):
        c = counts(source)
        if not c:
            continue
        if c.get("kana", 0) >= 2:
            return {"han", "kana"}
        if c.get("hangul", 0) >= 2:
            return {"hangul", "han"}
        if c.get("han", 0) >= 2:
            return {"han", "bopomofo"}
        top = max(c, key=c.get)
        if top != "latin" and c[top] >= 0.3 * sum(c.values()):
            return {top}
        return {"latin"}
    return {"latin"}


def named_scripts(text: str) -> set[str]:
    out: set[str] = set()
    for pattern, scripts in LANGUAGE_NAME:
        if pattern.search(text):
            out |= scripts
    return out
