"""The one exception type the CLI turns into a one-line message and a non-zero exit, and the file write
that reports its failure as one."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input or a broken environment: printed as `error: <message>`, never as a traceback."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def write_file(path: Path, data: str | bytes, failure: str) -> Path:
    """Write `data` (text or bytes) to `path`, making its directory first. An OSError (a read-only checkout, a
    full disk, a file where a directory should be) becomes the one line `<failure>: <why>`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    except OSError as exc:
        raise UserError(f"{failure}: {exc.strerror or exc}") from None
    return path
