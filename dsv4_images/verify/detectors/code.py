"""Fenced code that does not parse in its declared language.

Principle. A block the answer labels with a language is meant to be that language; a corrupted
token inside it usually breaks its syntax. Checked, with the standard library unless noted:

- python (py, python3): `ast.parse`; REPL transcripts (`>>>` lines) are checked line by line
  with their `...` continuations, and IPython magics and shell escapes (`%`, `!` lines) are blanked;
- json: `json.loads`; JSONC (`//` line comments) is accepted, since answers annotate examples;
- toml: `tomllib`;  yaml (yml): `yaml.safe_load_all` when PyYAML is importable, else skipped;
- xml: `xml.etree.ElementTree` on the block wrapped in one root (snippets have several);
- brace languages (c, cpp, c++, cs, csharp, java, javascript, js, typescript, ts, go, kotlin,
  swift, css, scss, rust): brackets balanced outside strings and comments;
- sql: what no SQL dialect accepts (sql.py); sqlite, sqlite3: SQLite's own parser;
- bash, sh, shell (and transcripts with `$ ` prompts): `bash -n` (shell.py; skipped without bash).

Every other language (zsh, html, jsx, plain text, ...) is skipped, as is a block elided on
purpose (a line that is only "..." or "…", or a placeholder comment). A block cut off by the end of
the text is judged by `ending`, not here.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
import xml.etree.ElementTree as ET

from . import Finding, shell, sql
from .markdown import CodeBlock

BRACE_LANGS = {"c", "cpp", "c++", "cs", "csharp", "java", "javascript", "js", "typescript", "ts", "go", "kotlin",
               "swift", "css", "scss", "rust", "h", "hpp", "cc"}
PYTHON = {"python", "py", "python3"}
ELIDED = re.compile(r"^\s*(?:\.\.\.|…|//\s*\.\.\.|#\s*\.\.\.|/\*\s*\.\.\.\s*\*/)\s*$", re.M)
PAIRS = {")": "(", "]": "[", "}": "{"}


def _python(body: str) -> str | None:
    lines = body.splitlines()
    if any(line.lstrip().startswith(">>>") for line in lines):
        chunks, current = [], None
        for line in lines:
            s = line.strip()
            if s.startswith(">>>"):
                if current is not None:
                    chunks.append(current)
                current = [s[3:].removeprefix(" ")]
            elif s.startswith("...") and current is not None:
                current.append(s[3:].removeprefix(" "))
            elif current is not None:
                chunks.append(current)
                current = None
        if current is not None:
            chunks.append(current)
        sources = ["\n".join(c) for c in chunks]
    else:
        sources = ["\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)]
    for source in sources:
        try:
            ast.parse(source)
        except SyntaxError as exc:
            return f"line {exc.lineno}: {exc.msg}"
        except ValueError as exc:      # null bytes
            return str(exc)
    return None


def _json(body: str) -> str | None:
    try:
        json.loads(body)
    except ValueError:
        stripped = re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*', lambda m: m.group(1) or "", body)
        try:
            json.loads(stripped)
        except ValueError as exc:
            return str(exc)
    return None


def _toml(body: str) -> str | None:
    try:
        tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:
        return str(exc)
    return None


def _yaml(body: str) -> str | None:
    try:
        import yaml
    except ImportError:
        return None
    try:
        list(yaml.safe_load_all(body))
    except yaml.YAMLError as exc:
        return " ".join(str(exc).split())[:120]
    return None


def _xml(body: str) -> str | None:
    inner = re.sub(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>", "", body)
    try:
        ET.fromstring(f"<root>{inner}</root>")
    except ET.ParseError as exc:
        return str(exc)
    return None


def _braces(body: str, lang: str) -> str | None:
    stack: list[tuple[str, int]] = []
    i, n, line = 0, len(body), 1
    while i < n:
        c = body[i]
        if c == "\n":
            line += 1
        elif body.startswith("//", i) and lang not in ("css",):
            j = body.find("\n", i)
            i = n if j < 0 else j
            continue
        elif body.startswith("/*", i):
            j = body.find("*/", i + 2)
            if j < 0:
                return f"line {line}: unterminated comment"
            line += body.count("\n", i, j)
            i = j + 2
            continue
        elif body.startswith('"""', i):
            j = body.find('"""', i + 3)
            if j < 0:
                return f"line {line}: unterminated text block"
            line += body.count("\n", i, j)
            i = j + 3
            continue
        elif c in "\"'`":
            if c == "'" and lang == "rust" and not re.match(r"'(?:\\.|[^\\'\n])'", body[i:]):
                i += 1      # a Rust lifetime, not a character literal
                continue
            j = i + 1
            while j < n and body[j] != c and not (body[j] == "\n" and c != "`"):
                j += 2 if body[j] == "\\" else 1
            if j >= n or body[j] != c:
                return f"line {line}: unterminated string"
            line += body.count("\n", i, j)
            i = j + 1
            continue
        elif c in "([{":
            stack.append((c, line))
        elif c in ")]}":
            if not stack or stack[-1][0] != PAIRS[c]:
                return f"line {line}: unmatched {c!r}"
            stack.pop()
        i += 1
    if stack:
        return f"line {stack[-1][1]}: {stack[-1][0]!r} never closed"
    return None


def check_block(block: CodeBlock) -> str | None:
    """Why the block does not parse in its declared language (None: it parses, or is not checked)."""
    lang, body = block.lang, block.body
    if not block.closed or not body.strip() or ELIDED.search(body):
        return None
    if lang in PYTHON:
        return _python(body)
    if lang in ("json", "jsonc"):
        return _json(body)
    if lang == "toml":
        return _toml(body)
    if lang in ("yaml", "yml"):
        return _yaml(body)
    if lang == "xml":
        return _xml(body)
    if lang in BRACE_LANGS:
        return _braces(body, lang)
    if lang in ("sql", "mysql", "postgresql", "postgres", "psql", "plsql", "tsql", "pgsql"):
        return sql.check(body)
    if lang in ("sqlite", "sqlite3"):
        return sql.check(body) or sql.check_sqlite(body)
    if lang in shell.SHELLS:
        return shell.check(body, lang)
    return None


def code_syntax(blocks: list[CodeBlock]) -> list[Finding]:
    for block in blocks:
        why = check_block(block)
        if why:
            return [Finding("code-syntax", f"{block.lang} block does not parse: {why}")]
    return []
