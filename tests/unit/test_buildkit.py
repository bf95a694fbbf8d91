"""The BuildKit progress decoder, on hand-encoded protobuf StatusResponse messages."""

import io
import tarfile

from dsv4_images import buildkit


def varint(n: int) -> bytes:
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def field(number: int, value) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def timestamp(seconds: int, nanos: int = 0) -> bytes:
    return field(1, seconds) + (field(2, nanos) if nanos else b"")


def vertex(digest, name=None, started=None, completed=None, cached=False, error=None) -> bytes:
    msg = field(1, digest) + (field(3, name) if name else b"")
    msg += field(4, 1) if cached else b""
    msg += field(5, timestamp(*started)) if started else b""
    msg += field(6, timestamp(*completed)) if completed else b""
    msg += field(7, error) if error else b""
    return field(1, msg)


def log(digest, text) -> bytes:
    return field(3, field(1, digest) + field(3, 1) + field(4, text.encode()))


def test_fields_decode_varints_and_nested_messages():
    assert list(buildkit.fields(field(1, 300) + field(2, "hi"))) == [(1, 300), (2, b"hi")]


def test_progress_reports_steps_logs_cache_and_errors():
    lines = []
    p = buildkit.Progress(lines.append)
    p.feed(vertex("sha256:a", "[runtime-deps 1/4] FROM base", started=(100,)) + vertex("sha256:b", "[x 2/4] RUN true", cached=True,
                                                                                          started=(100,), completed=(100,)))
    p.feed(log("sha256:a", "step one\nstep two\n"))
    p.feed(vertex("sha256:a", completed=(102, 500_000_000)))
    p.feed(vertex("sha256:c", "[x 3/4] RUN false", started=(103,)) + log("sha256:c", "boom") +
           vertex("sha256:c", error="exit code: 1"))
    assert lines == ["#1 [runtime-deps 1/4] FROM base", "#2 [x 2/4] RUN true", "#2 CACHED", "#1 step one", "#1 step two",
                     "#1 DONE 2.5s", "#3 [x 3/4] RUN false", "#3 boom", "#3 ERROR: exit code: 1"]
    assert p.failure_context() == ["[x 3/4] RUN false: boom"]


def test_the_build_context_is_deterministic(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a.sh").write_text("a")
    (tmp_path / "a.sh").chmod(0o755)
    first = buildkit.context_tar(tmp_path, ["b.txt", "a.sh"], mtime=1234)
    (tmp_path / "b.txt").touch()
    assert buildkit.context_tar(tmp_path, ["a.sh", "b.txt"], mtime=1234) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    assert [(m.name, m.mode, m.mtime, m.uid) for m in members] == [("a.sh", 0o755, 1234, 0), ("b.txt", 0o644, 1234, 0)]
