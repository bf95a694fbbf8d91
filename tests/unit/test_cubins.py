"""The cubin preflight: which packages a module set needs, and the one-line refusal before a build when
the repository cannot give them (a real loopback HTTP server stands in for a mirror)."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dsv4_images import cubins, matrix, plan, provenance
from dsv4_images.errors import UserError

M = matrix.load()
SM100, SM120, CPU = M.resolve("sm100"), M.resolve("sm120"), M.resolve("cpu")
CHECKSUMS = b"0" * 64 + b"  batched_gemm.cubin\n"


class _Mirror(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    monkeypatch.setattr(cubins, "CACHE", tmp_path / "cache")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/mirror/"
    httpd.shutdown()


def _pinned_to(target, data: bytes):
    """`target` with its one cubin package pinned to `data` (the real pin's bytes are not ours to serve)."""
    package = target.flashinfer.cubin_packages[0].model_copy(update={"checksums_sha256": hashlib.sha256(data).hexdigest()})
    fi = target.flashinfer.model_copy(update={"cubin_packages": (package,)})
    return target.model_copy(update={"flashinfer": fi}), package


def test_the_full_set_needs_the_trtllm_cubins_and_the_ci_set_and_other_targets_none():
    assert [p.name for p in cubins.needed(SM100, "full")] == ["TRTLLM_GEN_BMM"]
    assert cubins.needed(SM100, "ci") == []
    assert cubins.needed(SM120, "full") == [] and cubins.needed(CPU, None) == []


def test_a_mirror_serving_the_pinned_checksums_passes_and_the_file_is_kept(mirror, tmp_path):
    target, package = _pinned_to(SM100, CHECKSUMS)
    _Mirror.files = {f"/mirror/{package.path}checksums.txt": CHECKSUMS}
    lines = []
    cubins.preflight(target, "full", mirror, lines.append)
    assert lines == [f"cubins: TRTLLM_GEN_BMM: checksums.txt from {mirror} matches its pin"]
    assert (tmp_path / "cache" / "cubins" / package.checksums_sha256 / "checksums.txt").read_bytes() == CHECKSUMS


@pytest.mark.parametrize("served, says", [(None, "failed: HTTP 404 Not Found"), (b"other bytes\n", "checksum mismatch")])
def test_a_mirror_without_the_package_or_with_other_bytes_is_one_line_naming_both_ways_on(mirror, served, says):
    target, package = _pinned_to(SM100, CHECKSUMS)
    _Mirror.files = {} if served is None else {f"/mirror/{package.path}checksums.txt": served}
    with pytest.raises(UserError) as exc:
        cubins.preflight(target, "full", mirror, lambda line: None)
    message = str(exc.value)
    assert "\n" not in message and says in message
    assert message.startswith(f"FlashInfer cubins: TRTLLM_GEN_BMM (loaded by fused_moe_trtllm_sm100) cannot be had from {mirror}")
    assert "--cubins-repository URL" in message and "--flashinfer-modules ci" in message


def test_the_ci_set_asks_nothing_of_the_repository(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("fetched")
    monkeypatch.setattr(cubins, "verified", refuse)
    cubins.preflight(SM100, "ci", "http://127.0.0.1:9/")


def test_the_repository_is_a_build_argument_not_a_label_and_only_for_a_target_with_cubins():
    prov = provenance.Provenance("0" * 40, "0" * 12, 1764547200)
    default = plan.make(M, SM100, prov)
    mirrored = plan.make(M, SM100, prov, cubins_repository="http://127.0.0.1:9/m/")
    assert "FLASHINFER_CUBINS_REPOSITORY" not in default.build_args
    assert mirrored.build_args["FLASHINFER_CUBINS_REPOSITORY"] == "http://127.0.0.1:9/m/"
    assert mirrored.labels == default.labels  # the pins decide the bytes: a mirror gives the same image
    with pytest.raises(UserError, match="^--cubins-repository: target sm120 bakes no FlashInfer cubins$"):
        plan.make(M, SM120, prov, cubins_repository="http://127.0.0.1:9/m/")


def test_a_mirror_that_does_not_answer_http_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    """A hostile or broken server: a garbage status line (http.client raises BadStatusLine, which is
    neither a URLError nor an OSError)."""
    monkeypatch.setattr(cubins, "CACHE", tmp_path / "cache")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer():
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"GARBAGE\r\n\r\n")
        conn.close()
    threading.Thread(target=answer, daemon=True).start()
    target, _ = _pinned_to(SM100, CHECKSUMS)
    with pytest.raises(UserError) as exc:
        cubins.preflight(target, "full", f"http://127.0.0.1:{server.getsockname()[1]}/", lambda line: None)
    server.close()
    assert "\n" not in str(exc.value) and "the answer is not HTTP (BadStatusLine: GARBAGE)" in str(exc.value)
