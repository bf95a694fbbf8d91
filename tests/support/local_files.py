"""Test-only stand-ins for files the project reads from elsewhere: a copy of matrix.toml with one edit,
and a directory served over HTTP on 127.0.0.1 (an artifact server, GitHub's archive layout, an index)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from dsv4_images import matrix


def broken_matrix(tmp_path: Path, old: str, new: str, *, first_only: bool = False) -> Path:
    """matrix.toml with `old` replaced by `new` (it must occur exactly once, or with first_only at least once
    and only the first is replaced), beside a link to the real patches/ so only the edit differs."""
    text = matrix.MATRIX_PATH.read_text()
    if first_only:
        assert old in text, old
    else:
        assert text.count(old) == 1, old
    path = tmp_path / "matrix.toml"
    path.write_text(text.replace(old, new, 1))
    (tmp_path / "patches").symlink_to(matrix.MATRIX_PATH.parent / "patches")
    return path


@contextmanager
def served_directory(root: Path) -> Iterator[str]:
    """Serve `root` read-only on 127.0.0.1 (quietly); yields the base URL, without a trailing slash."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
