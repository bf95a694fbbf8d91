"""Checked inputs for the command line: strict numbers, ports, writable report paths, http(s) URLs.

Python's int() and float() also read ' 8', '1_000', Unicode digits ('١٢', '８') and 'nan'; what a
user did not mean is refused here instead of silently read. Each check raises ValueError with the
reason; `flag(check, ...)` makes it an argparse type (one `error:` line naming the flag), and
`value(check, name, text, ...)` a UserError naming an environment variable.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import tempfile
import urllib.parse
from pathlib import Path

from .errors import UserError

_INTEGER = re.compile(r"-?[0-9]{1,30}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,6})?")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
NAME_MAX, PATH_MAX = 255, 4095


def shown(text: str, limit: int = 60) -> str:
    """The value as it appears in an error: quoted, escaped (always one line), shortened."""
    return repr(text[:limit]) + (f"... ({len(text)} characters)" if len(text) > limit else "")


def integer(text: str, low: int, high: int) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"expected an integer in {low}-{high} (ASCII digits only), got {shown(text)}")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"expected an integer in {low}-{high}, got {shown(text)}")
    return number


def decimal(text: str, low: float, high: float) -> float:
    """A finite number in [low, high], in plain decimal or exponent notation."""
    number = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"expected a number in {low:g}-{high:g}, got {shown(text)}")
    return number


def port(text: str) -> int:
    return integer(text, 1, 65535)


def word(text: str) -> str:
    """A name such as a target (--arch): not empty, no spaces or control characters (the caller looks it up)."""
    if not text or not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError(f"expected a name without spaces, got {shown(text)}")
    return text


def writable_file(text: str) -> Path:
    """A file path that can be written now: not a directory, not under a file, not on a read-only or
    refusing file system, no component longer than the file system allows. Nothing is left behind."""
    if not text.strip() or text != text.strip():
        raise ValueError(f"expected a file path without surrounding spaces, got {shown(text)}")
    path = Path(text)
    if len(os.fsencode(text)) > PATH_MAX or any(len(os.fsencode(p)) > NAME_MAX for p in path.parts):
        raise ValueError(f"{shown(text)} is longer than a path ({PATH_MAX} bytes, {NAME_MAX} per name) may be")
    try:
        if path.is_dir():
            raise ValueError(f"{shown(text)} is a directory")
        if path.exists():
            with open(path, "a"):
                return path
        ancestor = path.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ValueError(f"{shown(text)} is under {shown(str(ancestor))}, which is a file, not a directory")
        if ancestor == path.parent:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            path.unlink()
        else:
            tempfile.TemporaryFile(dir=ancestor).close()
    except OSError as exc:
        raise ValueError(f"cannot write {shown(text)}: {exc.strerror or exc}") from None
    return path


def writable_dir(text: str) -> Path:
    """A directory that exists or can be made, and can be written now. Probed with a file of a name no one
    else uses: builds running side by side (./dev test's two runs) check one cache at the same moment, and a
    fixed probe name let one refuse the other's file (O_EXCL) or remove it. Nothing is left behind."""
    if not text.strip() or text != text.strip():
        raise ValueError(f"expected a directory path without surrounding spaces, got {shown(text)}")
    path = Path(text)
    if len(os.fsencode(text)) > PATH_MAX - NAME_MAX or any(len(os.fsencode(p)) > NAME_MAX for p in path.parts):
        raise ValueError(f"{shown(text)} is longer than a directory path ({PATH_MAX - NAME_MAX} bytes, "
                         f"{NAME_MAX} per name) may be")
    try:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{shown(text)} is a file, not a directory")
        ancestor = path
        while not ancestor.exists():
            if ancestor.is_symlink():  # a link to nothing (or a loop): mkdir there fails later, with a traceback
                raise ValueError(f"{shown(text)} cannot be made: {shown(str(ancestor))} is a symbolic link that "
                                 "leads nowhere")
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ValueError(f"{shown(text)} is under {shown(str(ancestor))}, which is a file, not a directory")
        tempfile.TemporaryFile(dir=ancestor).close()
    except OSError as exc:
        raise ValueError(f"cannot write {shown(text)}: {exc.strerror or exc}") from None
    return path


def http_url(text: str) -> str:
    """An http(s) URL verify can talk to: host and optional port and path; nothing it would ignore
    (credentials, a query, a fragment) and nothing http.client refuses (spaces, control characters)."""
    if not text or not text.isascii() or not text.isprintable() or " " in text:
        raise ValueError(f"expected an http:// or https:// URL in printable ASCII without spaces, got {shown(text)}")
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:
        raise ValueError(f"{shown(text)}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, e.g. http://127.0.0.1:8000, got {shown(text)}")
    if "@" in parts.netloc:
        raise ValueError(f"{shown(text)}: credentials in the URL are not sent by verify")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"{shown(text)}: a query or fragment would be ignored")
    bracketed = parts.netloc.startswith("[")
    if bracketed:
        name, _, rest = parts.netloc[1:].partition("]")
    else:
        name, colon, port_text = parts.netloc.partition(":")
        rest = colon + port_text
    if rest and (rest[0] != ":" or not (rest == ":" or rest[1:].isdigit() and 1 <= int(rest[1:7]) <= 65535)):
        raise ValueError(f"{shown(text)}: the port is not a number in 1-65535")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if (address is None or address.version == 4) if bracketed else (address is None and not HOSTNAME.fullmatch(name)):
        raise ValueError(f"{shown(text)}: {shown(name)} is not a host name, an IPv4 address or a bracketed IPv6 address")
    return text


def flag(check, *bounds):
    """`check` as an argparse type: its ValueError becomes argparse's one-line error naming the flag."""
    def parse(text: str):
        try:
            return check(text, *bounds)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = check.__name__
    return parse


def value(check, name: str, text: str, *bounds):
    """`check` applied to environment variable `name`: a UserError naming it."""
    try:
        return check(text, *bounds)
    except ValueError as exc:
        raise UserError(f"{name}: {exc}") from None


def registry_reference(text: str) -> str:
    """An image reference in a registry, as Docker reads it (references.py): REPOSITORY[:TAG][@DIGEST]."""
    from .references import parse
    try:
        ref = parse(text)
    except ValueError as exc:
        raise ValueError(f"{shown(text)} is not an image reference: {exc}") from None
    _, colon, port_text = ref.domain.rpartition(":")
    if colon and port_text.isdigit() and not 1 <= int(port_text) <= 65535:  # Docker's grammar takes any digits
        raise ValueError(f"{shown(text)}: registry port {port_text[:8]} is not in 1-65535")
    return text
