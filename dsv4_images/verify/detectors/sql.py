"""SQL that no dialect accepts.

Principle. Answers write SQL for MySQL, PostgreSQL, SQL Server, Oracle or SQLite, and each
dialect has syntax the others reject (INTERVAL 7 DAY, x::int, TOP 5, ILIKE), so no one parser can
judge a block declared `sql`. What no dialect accepts is judged instead, on the tokens (strings,
quoted identifiers, comments and dollar-quoted bodies read as such):

- a string, quoted identifier or block comment never closed, a bracket never closed or closing
  nothing;
- a comma with nothing after it: before another comma, a closing bracket, a `;`, the end, or a
  clause keyword (FROM, WHERE, GROUP, ORDER, HAVING, LIMIT, UNION ...): "ORDER BY a,;";
- a clause keyword or a binary operator with nothing after it: before `;`, a closing bracket,
  a comma, the end, or another clause keyword ("WHERE ;", "GROUP BY ORDER BY", "a = ;").

A block declared `sqlite` (or `sqlite3`) is one dialect: the standard library's SQLite parses each
statement (EXPLAIN against an empty in-memory database), and a syntax error is a fault; errors
about tables or columns that do not exist are not.
"""

from __future__ import annotations

import re
import sqlite3

TOKEN = re.compile(r"""
    (?P<space>\s+) | (?P<line_comment>--[^\n]*) | (?P<block_comment>/\*.*?\*/) | (?P<open_comment>/\*)
  | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
  | (?P<string>[EeNnBbXx]?'(?:[^']|'')*') | (?P<open_string>')
  | (?P<quoted>"(?:[^"]|"")*"|`[^`]*`) | (?P<open_quoted>["`])
  | (?P<word>[A-Za-z_][\w$]*) | (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)
  | (?P<param>[:@$?][\w]*) | (?P<op><=|>=|<>|!=|\|\||::|->>|->|[-+*/%=<>^~!&|]) | (?P<punct>[(),;\[\]{}.])
  | (?P<other>.)""", re.S | re.X)
CLAUSES = {"FROM", "WHERE", "GROUP", "ORDER", "HAVING", "LIMIT", "UNION", "INTERSECT", "EXCEPT", "OFFSET",
           "RETURNING", "WINDOW", "QUALIFY"}
NEEDS_MORE = CLAUSES | {"BY", "SET", "ON", "AND", "OR", "JOIN", "VALUES", "INTO", "SELECT", "UPDATE", "LIKE", "IN",
                        "NOT", "BETWEEN", "WHEN", "THEN", "ELSE", "AS"}
BINARY = {"=", "<", ">", "<=", ">=", "<>", "!=", "||", "+", "/", "%", "^"}
ENDS = {";", ")", ",", "]", None}


def _tokens(body: str) -> tuple[list[tuple[str, str, int]], str | None]:
    out, line = [], 1
    for m in TOKEN.finditer(body):
        kind, text = m.lastgroup if m.lastgroup != "tag" else "dollar", m.group(0)
        if kind.startswith("open_"):
            return out, f"line {line}: {text!r} never closed"
        if kind not in ("space", "line_comment", "block_comment"):
            out.append((kind, text.upper() if kind == "word" else text, line))
        line += text.count("\n")
    return out, None


def check(body: str) -> str | None:
    """Why the block is SQL that no dialect accepts (None: nothing found)."""
    tokens, why = _tokens(body)
    if why:
        return why
    stack: list[tuple[str, int]] = []
    for i, (kind, text, line) in enumerate(tokens):
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if text in ("(", "["):
            stack.append((text, line))
        elif text in (")", "]"):
            if not stack or stack[-1][0] != "([)]"[")]".index(text)]:
                return f"line {line}: {text!r} closes nothing"
            stack.pop()
        if kind == "punct" and text == "," and (nxt in ENDS or nxt in CLAUSES):
            return f"line {line}: a comma before {nxt or 'the end'!r}"
        dangling = kind == "word" and text in NEEDS_MORE or kind == "op" and text in BINARY
        if dangling and (nxt in ENDS or nxt in CLAUSES):
            if not (text == "AS" and nxt in (")", ",")):
                return f"line {line}: {text} with nothing after it"
    if stack:
        return f"line {stack[-1][1]}: {stack[-1][0]!r} never closed"
    return None


def check_sqlite(body: str) -> str | None:
    """Why SQLite cannot parse a statement of the block (None: every statement parses)."""
    db = sqlite3.connect(":memory:")
    try:
        statement = ""
        for piece in body.split(";"):
            statement += piece + ";"
            if not sqlite3.complete_statement(statement):
                continue
            if any(text != ";" for _, text, _ in _tokens(statement)[0]):       # not only comments
                try:
                    db.execute("EXPLAIN " + statement)
                except sqlite3.Error as exc:
                    if re.search(r"syntax error|unrecognized token|incomplete input", str(exc)):
                        return str(exc)
            statement = ""
        if any(text != ";" for _, text, _ in _tokens(statement)[0]) and not sqlite3.complete_statement(statement):
            return "incomplete input"
    finally:
        db.close()
    return None
