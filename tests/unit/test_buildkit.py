"""The BuildKit progress decoder, on hand-encoded protobuf StatusResponse messages, and the build call on a
stand-in for the Engine's /build stream (the integration tests build for real)."""

import base64
import io
import tarfile

import pytest
from docker.errors import APIError

from dsv4_images import buildkit
from dsv4_images.errors import UserError


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
    with pytest.raises(UserError, match="^build context: locks/cpu.txt is missing$"):
        buildkit.context_tar(tmp_path, ["a.sh", "locks/cpu.txt"], mtime=1234)


class FakeEngineAPI:
    """docker-py's low-level calls that buildkit.build makes, answering with a recorded /build stream."""

    def __init__(self, chunks, refuse: bool = False):
        self.chunks, self.refuse, self.params = chunks, refuse, None

    def _url(self, path):
        return path

    def _post(self, url, params, data, headers, stream, timeout):
        if self.refuse:
            raise APIError("500 Server Error", explanation="BuildKit is not enabled")
        self.params = params
        return object()

    def _raise_for_status(self, response):
        pass

    def _stream_helper(self, response, decode):
        yield from self.chunks


def trace(*messages: bytes) -> dict:
    return {"id": "moby.buildkit.trace", "aux": base64.b64encode(b"".join(messages)).decode()}


def run_build(chunks, lines=None, refuse=False):
    class Client:
        api = FakeEngineAPI(chunks, refuse)
    lines = [] if lines is None else lines
    result = buildkit.build(Client, b"context", "Dockerfile.cpu", ["x:1"], {}, stage="image", network_host=True,
                            no_cache=True, emit=lines.append)
    return result, lines, Client.api.params


def test_a_build_reports_its_image_and_how_many_steps_were_cached():
    result, lines, params = run_build([
        trace(vertex("sha256:a", "[image 1/2] FROM base", cached=True, started=(1,), completed=(1,)),
              vertex("sha256:b", "[image 2/2] RUN make", started=(1,))),
        trace(vertex("sha256:b", completed=(4,))),
        {"id": "moby.image.id", "aux": {"ID": "sha256:" + "f" * 64}}])
    assert (result.image_id, result.steps, result.cached_steps) == ("sha256:" + "f" * 64, 2, 1)
    assert lines[-2:] == ["#2 DONE 3.0s", "stage image: 3.0 s (2 steps, 1 cached)"]
    assert result.stages == {"image": {"seconds": 3.0, "steps": 2, "cached": 1}}
    assert (params["version"], params["target"], params["networkmode"], params["nocache"]) == ("2", "image", "host", "1")


def test_a_failed_build_is_one_error_line_after_the_failed_steps_last_log_lines():
    lines = []
    with pytest.raises(UserError) as exc:
        run_build([trace(vertex("sha256:c", "[x 3/4] RUN false", started=(1,)),
                         log("sha256:c", "".join(f"line {i}\n" for i in range(1, 8))),
                         vertex("sha256:c", error="process did not complete successfully: exit code: 1")),
                   {"error": "failed to solve:\n  process did not complete successfully: exit code: 1"}], lines)
    assert str(exc.value) == "build failed: failed to solve: process did not complete successfully: exit code: 1"
    assert lines[-5:] == [f"  | [x 3/4] RUN false: line {i}" for i in range(3, 8)] and "  | [x 3/4] RUN false: line 2" not in lines


def test_a_stream_that_ends_without_an_image_or_a_refused_build_is_an_error():
    with pytest.raises(UserError, match="^build failed: no image produced$"):
        run_build([trace(vertex("sha256:a", "[x 1/1] RUN true", started=(1,), completed=(2,)))])
    with pytest.raises(UserError, match="^the Docker daemon refused the build: BuildKit is not enabled$"):
        run_build([], refuse=True)


def test_stage_seconds_span_each_stages_first_start_to_last_end_and_name_long_steps_outside_stages():
    p = buildkit.Progress(lambda line: None)
    p.feed(vertex("sha256:a", "[flashinfer-aot 1/2] RUN a", started=(10,), completed=(70,)) +
           vertex("sha256:b", "[flashinfer-aot 2/2] RUN b", started=(60,), completed=(100,)) +
           vertex("sha256:c", "[runtime-base 1/1] FROM x", cached=True, started=(1,), completed=(1,)) +
           vertex("sha256:d", "exporting to image", started=(100,), completed=(130,)) +
           vertex("sha256:e", "[internal] load build context", started=(0,), completed=(2,)) +
           vertex("sha256:f", "[internal] load .dockerignore", started=(0,), completed=(0, 5000)))
    assert p.stage_seconds() == {"flashinfer-aot": {"seconds": 90.0, "steps": 2, "cached": 0},
                                 "runtime-base": {"seconds": 0.0, "steps": 1, "cached": 1},
                                 "exporting to image": {"seconds": 30.0, "steps": 1, "cached": 0},
                                 "[internal] load build context": {"seconds": 2.0, "steps": 1, "cached": 0}}
