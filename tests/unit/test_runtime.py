"""What the entrypoint checks and prepares before vLLM starts (in_image/runtime.py): secrets never
printed, a too-small /dev/shm and an unwritable cache refused in one line, caches keyed to the
image, and probes that ask the port the server really uses."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dsv4_images import REPO_ROOT, matrix
from dsv4_images.in_image import entrypoint as ep
from dsv4_images.in_image import runtime

M = matrix.load()
SECRET, HF = "sk-live-9f8e7d6c5b4a", "hf_abcdefghijklmnop"


def defaults_file(tmp_path, target="cpu"):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(M.resolve(target).serve_defaults()))
    return path


def test_secret_flags_and_variables_never_reach_the_printed_command(tmp_path, capsys):
    env = {"VLLM_EXTRA_ARGS": f"--api-key {SECRET} --seed 3", "HF_TOKEN": HF, "DSV4_SKIP_PREFLIGHT": "1",
           "MY_SERVICE_KEY": "zzz-private-zzz"}
    assert ep.main(["--print-command", f"--hf-token={HF}", "--ssl-keyfile", "/k.pem", "--note", "zzz-private-zzz"],
                   env, defaults_file(tmp_path)) == 0
    out, err = capsys.readouterr()
    for text in (out, err):
        assert SECRET not in text and HF not in text and "zzz-private-zzz" not in text
    assert "--api-key '***'" in out and "'--hf-token=***'" in out
    assert "--ssl-keyfile /k.pem" in out and "--seed 3" in out  # a key file's path is not a secret


def test_redaction_covers_every_secret_form():
    cmd = ["vllm", "serve", "m", "--api-key", "a1b2c3", "--foo-token=t0k3n", "--db-password", "pw", "--key", "plain"]
    assert runtime.redact_command(cmd) == ["vllm", "serve", "m", "--api-key", "***", "--foo-token=***",
                                           "--db-password", "***", "--key", "plain"]
    assert set(runtime.secret_values({"HF_TOKEN": "hf_x1", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "KEYBOARD": "qwerty",
                                      "TOKENIZERS_PARALLELISM": "false"}, cmd)) == {"hf_x1", "s3cr3t", "a1b2c3",
                                                                                   "t0k3n", "pw"}


def test_a_too_small_shm_is_one_line_naming_what_to_pass():
    with pytest.raises(runtime.EnvironmentProblem) as exc:
        runtime.check_shm(256, {}, measured=64)
    assert "/dev/shm is 64 MiB but this image needs at least 256 MiB" in str(exc.value)
    assert "--shm-size=1g" in str(exc.value) and "\n" not in str(exc.value)
    assert runtime.check_shm(256, {}, measured=1024) is None
    assert runtime.check_shm(256, {"DSV4_SKIP_SHM_CHECK": "1"}, measured=64) is None
    assert M.resolve("cpu").serve.min_shm_mb >= 160  # vLLM's own request on the cpu target, measured


def test_caches_are_keyed_to_the_image_and_say_cold_then_warm(tmp_path):
    env = {"HOME": str(tmp_path)}
    build = M.resolve("cpu").build_id()
    variables, notes = runtime.prepare_caches(env, build)
    keyed = tmp_path / ".cache" / "dsv4-flash" / build
    assert variables["HF_HOME"] == str(tmp_path / ".cache" / "huggingface")  # weights: shared by every image
    for key in ("VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "FLASHINFER_WORKSPACE_BASE"):
        assert variables[key].startswith(str(keyed)), key
    assert "caches: cold for build" in notes[0]
    (keyed / "triton" / "k.so").parent.mkdir(parents=True)
    (keyed / "triton" / "k.so").write_bytes(b"x" * 2_000_000)
    _, again = runtime.prepare_caches(env, build)
    assert again[0].startswith(f"caches: warm for build {build}") and "2 MB of compiled kernels" in again[0]
    _, other = runtime.prepare_caches(env, "0123456789abcdef")
    assert "cold" in other[0] and f"1 other build(s) under {tmp_path / '.cache' / 'dsv4-flash'} ({build})" in other[1]


def test_the_build_id_follows_the_inputs_not_the_revision():
    cpu = M.resolve("cpu")
    bumped = cpu.model_copy(update={"patches": ()})
    assert cpu.build_id() == M.resolve("cpu").build_id() != bumped.build_id()
    assert cpu.serve_defaults()["build_id"] == cpu.build_id()


def test_an_unwritable_cache_is_one_line(tmp_path, monkeypatch):
    """The write is stubbed to fail (root writes anywhere); the integration test mounts a real unwritable cache."""
    monkeypatch.setattr(runtime, "_writable", lambda path: False)
    with pytest.raises(runtime.EnvironmentProblem) as exc:
        runtime.prepare_caches({"HOME": str(tmp_path)}, "x")
    assert f"the cache directory {tmp_path / '.cache'} is not writable" in str(exc.value)
    assert "--user" in str(exc.value) and "\n" not in str(exc.value)


_SAME_PID_REPLICA = """
import os, sys
from pathlib import Path
os.getpid = lambda: 7  # every container's entrypoint can have the same PID in its own namespace
from dsv4_images.in_image import runtime
sys.exit(0 if all(runtime._writable(Path(sys.argv[1])) for _ in range(3000)) else 1)
"""


def test_replicas_sharing_a_cache_volume_do_not_trip_over_each_others_write_probe(tmp_path):
    """Two replicas of one image started together on one volume (deploy/compose's cpu stack) probed
    `.cache` with a file named after their PID, the same in both containers' PID namespaces: one removed
    the other's probe and called a writable volume not writable. Two processes with one PID probe 3,000
    times each, side by side: every probe must say writable."""
    shared = tmp_path / ".cache"
    replicas = [subprocess.Popen([sys.executable, "-c", _SAME_PID_REPLICA, str(shared)], cwd=REPO_ROOT)
                for _ in range(2)]
    assert [p.wait(timeout=300) for p in replicas] == [0, 0]
    assert not list(shared.iterdir())  # no probe file left behind


def test_a_cache_path_that_cannot_be_a_directory_is_not_writable(tmp_path):
    """Unstubbed (root writes anywhere, so a file in the way stands in for a read-only mount)."""
    (tmp_path / "file").write_text("")
    assert runtime._writable(tmp_path / "file" / ".cache") is False
    assert runtime._writable(tmp_path / "ok" / ".cache") is True


def test_the_warm_cache_size_ignores_files_a_sibling_replica_renames_meanwhile(tmp_path, monkeypatch):
    """A warm start sums the shared cache while another replica's compilers write temp files and rename
    them: a file gone between the listing and its stat is skipped, not a crash of the entrypoint."""
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "gone.tmp").write_bytes(b"x" * 99)
    real = runtime.os.lstat

    def lstat(path, *a, **k):
        if str(path).endswith("gone.tmp"):
            raise FileNotFoundError(path)
        return real(path, *a, **k)

    monkeypatch.setattr(runtime.os, "lstat", lstat)
    assert runtime._size(tmp_path) == 10


class _Fake(BaseHTTPRequestHandler):
    models = ["tiny-mtp"]

    def log_message(self, *a):
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self._send(200, {})
        if self.path == "/v1/models":
            if self.headers.get("Authorization") != f"Bearer {SECRET}":
                return self._send(401, {"error": "unauthorized"})
            return self._send(200, {"data": [{"id": m} for m in self.models]})
        self._send(404, {})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, {"choices": [{"text": "x"}]})


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_port
    httpd.shutdown()


def test_probes_ask_the_port_and_key_the_server_was_started_with(server, tmp_path, monkeypatch):
    record = tmp_path / "serving.json"
    monkeypatch.setattr(runtime, "RUNTIME_FILE", record)
    serve = ep.effective_settings(M.resolve("cpu").serve_defaults(), {})
    command = ep.build_command(serve, ["--port", "1", "--port", str(server), "--api-key", SECRET])
    runtime.record(serve, command, {})
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    info = runtime.recorded(record)
    assert info == {"port": server, "host": "0.0.0.0", "model": "tiny-mtp", "api_key": SECRET}
    assert runtime.probe(info, ready=False) and runtime.probe(info, ready=True)
    assert not runtime.probe({**info, "api_key": None}, ready=True)  # the model list needs the key
    assert not runtime.probe({**info, "model": "other"}, ready=True)
    assert not runtime.probe({**info, "port": 9}, ready=False)


class _Slow(_Fake):
    delay = 6.0  # over the 5 s a --healthcheck allows, well under the 60 s probe timeout of --ready

    def do_GET(self):
        time.sleep(self.delay)
        super().do_GET()


def test_a_ready_probe_waits_for_a_slow_model_list_a_health_probe_does_not():
    """A busy host (CI compiling beside two replicas) slows the model list: --ready must not call that
    server unready, while --healthcheck stays inside the image HEALTHCHECK's 6 s timeout."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        info = {"port": httpd.server_port, "model": "tiny-mtp", "api_key": SECRET}
        assert runtime.probe(info, ready=True)
        started = time.monotonic()
        assert not runtime.probe(info, ready=False)
        assert time.monotonic() - started < 6
    finally:
        httpd.shutdown()
