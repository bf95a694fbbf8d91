"""Shell code that bash cannot parse.

Principle. A block declared bash, sh or shell is meant to be a script: `bash -n` (parse, never
run) reads it and reports a syntax error (an `if` without `fi`, a quote never closed, `done`
without `do`). What an answer writes that is not script is set aside first: a transcript (lines
starting with a `$ ` prompt) is judged on its command lines only, and placeholders in angle
brackets (`ssh <user>@<host>`, `export TOKEN=<your-token>`) are read as words. zsh, fish,
PowerShell and console blocks without prompts are not checked. Without a `bash` on PATH the check
is skipped (and says so in `available()`); bash runs with an empty environment, no input but the
block, and a 5-second limit.
"""

from __future__ import annotations

import re
import shutil
import subprocess

SHELLS = {"bash", "sh", "shell", "console", "shell-session", "sh-session", "shellsession"}
PROMPT = re.compile(r"^\s*(?:\(\S+\)\s*)?(?:[\w.@~:/-]*)?\$ (.*)$")
PLACEHOLDER = re.compile(r"(?<![<\d&>])<([A-Za-z][\w .:/-]*)>(?![>&])")


def available() -> str | None:
    """The bash used for the check (None: not installed, shell blocks are not checked)."""
    return shutil.which("bash")


def _script(body: str, lang: str) -> str | None:
    lines = body.splitlines()
    prompted = [m.group(1) for m in map(PROMPT.match, lines) if m]
    if prompted:
        commands, keep = [], False
        for line in lines:
            m = PROMPT.match(line)
            if m or keep:
                commands.append(m.group(1) if m else line)
                keep = (m.group(1) if m else line).rstrip().endswith("\\")
        lines = commands
    elif lang in ("console", "shell-session", "sh-session", "shellsession"):
        return None
    return PLACEHOLDER.sub(lambda m: "PLACEHOLDER_" + re.sub(r"\W", "_", m.group(1)), "\n".join(lines)) + "\n"


def check(body: str, lang: str) -> str | None:
    """Why bash cannot parse the block (None: it parses, or cannot be checked)."""
    bash = available()
    script = _script(body, lang)
    if not bash or script is None:
        return None
    try:
        result = subprocess.run([bash, "-n"], input=script, capture_output=True, text=True, timeout=5,
                                env={"LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode == 0:
        return None
    errors = [line for line in result.stderr.splitlines() if "syntax error" in line or "unexpected" in line]
    first = (errors or result.stderr.splitlines() or ["bash -n failed"])[0].removeprefix(f"{bash}: ")
    return "bash -n: " + " ".join(first.split())[:160]
