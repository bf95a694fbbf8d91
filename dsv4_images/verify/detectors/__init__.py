"""The cheap text detectors behind `verify.corruption.detect`, one principle per module.

markdown     separates prose from code, inline code and math (most detectors read prose only)
scripts      letters of a writing system the answer's language does not use
tokens       special and control tokens, byte-level BPE markers, control characters, markup
encoding     U+FFFD and mojibake: bytes not decoded as the UTF-8 they were
latin_words  Latin words in non-Latin prose that are not borrowed terms
salad        token and symbol salad, Chinese words spaced apart in no order
grammar      words the grammar requires that are missing (dropped tokens)
repetition   loops at character, phrase, sentence and paragraph level
code         fenced code that does not parse in its declared language (sql, shell: SQL and bash)
ending       answers that end without a reason or stop mid-sentence
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    symptom: str
    detail: str

    def __str__(self) -> str:
        return f"{self.symptom}: {self.detail}"


def excerpt(text: str, start: int, end: int, width: int = 24) -> str:
    """The span with a little context, on one line, for a finding's detail."""
    left, right = max(0, start - width), min(len(text), end + width)
    return " ".join(text[left:right].split())[:2 * width + 40]


QUOTES = "\"'`‘’“”«»「」『』()[]（）【】"


def quoted(text: str, start: int, end: int) -> bool:
    """The span is named, not emitted: quotes or brackets hold it and nothing else."""
    return 0 < start and end < len(text) and text[start - 1] in QUOTES and text[end] in QUOTES
