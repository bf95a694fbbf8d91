"""The layer rewrite that makes images reproducible, and the comparison `build.py repro` reports.

The integration tests (test_publish.py, `build.py repro`) run this on the real cpu image; here the
rules are checked on small tars made in memory."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

from docker import errors as docker_errors

from dsv4_images import oci_archive, repro, reproducible

EPOCH = 1767225600


def _layer(entries: list[tuple[str, bytes | None, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mtime in entries:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                info.pax_headers = {"atime": "1900000000.5", "ctime": "1900000000.5"}
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _rewrite(raw: bytes, epoch: int = EPOCH) -> tuple[bytes, str, dict]:
    out = io.BytesIO()
    writer = oci_archive.HashingWriter(out)
    files = reproducible._rewrite_layer(io.BytesIO(raw), writer, epoch, EPOCH, index=True)
    return out.getvalue(), f"sha256:{writer.sha.hexdigest()}", files


def test_the_rewrite_clamps_mtimes_and_drops_access_and_change_times():
    raw = _layer([("usr/", None, EPOCH + 500), ("usr/a.py", b"print(1)\n", EPOCH + 500), ("usr/b", b"x", EPOCH - 10)])
    rewritten, digest, files = _rewrite(raw)
    assert digest == "sha256:" + hashlib.sha256(rewritten).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(rewritten)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["usr/a.py"].mtime == EPOCH and members["usr/b"].mtime == EPOCH - 10
    assert not any(k in m.pax_headers for m in members.values() for k in ("atime", "ctime"))
    assert files["usr/a.py"][5] == hashlib.sha256(b"print(1)\n").hexdigest()


def test_two_layers_that_differ_only_in_build_time_rewrite_to_the_same_bytes():
    first = _rewrite(_layer([("etc/x", b"same", EPOCH + 100)]))
    second = _rewrite(_layer([("etc/x", b"same", EPOCH + 99999)]))
    assert first[1] == second[1]


def test_a_layer_cached_from_an_earlier_commit_rewrites_like_a_fresh_build():
    """The cache can reuse a layer built before this commit's epoch; its files must still get the epoch.

    Seen for real: a warm-cache build kept files dated 02:24 from the previous commit's build while the
    no-cache rebuild had the new commit's epoch everywhere, so the two images differed."""
    commit_epoch = EPOCH + 86400 * 300
    cached = _rewrite(_layer([("opt/", None, commit_epoch - 700), ("opt/m.py", b"x = 1\n", commit_epoch - 700),
                              ("usr/doc", b"from a package", EPOCH - 86400)]), commit_epoch)
    fresh = _rewrite(_layer([("opt/", None, commit_epoch + 40), ("opt/m.py", b"x = 1\n", commit_epoch + 40),
                             ("usr/doc", b"from a package", EPOCH - 86400)]), commit_epoch)
    assert cached[1] == fresh[1]
    assert cached[2]["opt/m.py"][-1] == commit_epoch and cached[2]["usr/doc"][-1] == EPOCH - 86400
    assert reproducible.stamp(EPOCH, commit_epoch, EPOCH) == EPOCH  # the base's own time is kept


def test_rewriting_a_normalized_layer_again_changes_nothing():
    """A pushed image is already normalized; normalizing it again (the guard's diagnosis) keeps its digests."""
    rewritten, digest, files = _rewrite(_layer([("a/", None, EPOCH), ("a/b.txt", b"hello" * 1000, EPOCH + 7),
                                                ("a/" + "long-name/" * 12 + "c", b"x", EPOCH + 7)]))
    again, digest_again, files_again = _rewrite(rewritten)
    assert again == rewritten and digest_again == digest and files_again == files


def test_compare_names_the_differing_files_and_config_fields():
    def image(content: bytes, label: str) -> reproducible.NormalizedImage:
        _, digest, files = _rewrite(_layer([("same", b"1", EPOCH), ("f", content, EPOCH)]))
        return reproducible.NormalizedImage(digest, [reproducible.Layer(digest, files)],
                                            {"config": {"Labels": {"revision": label}}, "rootfs": {"diff_ids": [digest]}})
    report = repro.compare(image(b"a", "r1"), image(b"b", "r2"))
    assert not report["identical"] and report["layers"][0]["files_differing"] == 1
    assert [d["path"] for d in report["layers"][0]["differences"]] == ["f"]
    assert report["config_differences"] == ["config.Labels.revision: 'r1' != 'r2'"]
    same = repro.compare(image(b"a", "r1"), image(b"a", "r1"))
    assert same["identical"] and same["config_differences"] == []


def test_builds_made_with_different_epochs_show_which_files_differ():
    """A commit between two builds moves SOURCE_DATE_EPOCH: the comparison must name files, not just layers."""
    raw = _layer([("etc/", None, EPOCH + 5000), ("etc/x", b"same", EPOCH + 5000)])
    _, d1, f1 = _rewrite(raw, EPOCH)
    _, d2, f2 = _rewrite(raw, EPOCH + 60)
    report = repro.compare(reproducible.NormalizedImage("a", [reproducible.Layer(d1, f1)], {}),
                           reproducible.NormalizedImage("b", [reproducible.Layer(d2, f2)], {}))
    layer = report["layers"][0]
    assert not layer["match"] and layer["files_differing"] == 2
    assert layer["differences"][1]["a"][-1] == EPOCH and layer["differences"][1]["b"][-1] == EPOCH + 60


def test_the_archive_for_docker_load_is_streamed_and_frees_each_layer_once_sent(tmp_path):
    """`docker load` reads this stream; the integration tests load the real cpu image through it."""
    raw = _layer([("etc/", None, EPOCH), ("etc/x", b"x" * 1000, EPOCH)])
    layer_bytes, digest, files = _rewrite(raw)
    (tmp_path / f"{digest.split(':')[1]}.tar").write_bytes(layer_bytes)
    config = b'{"rootfs":{}}'
    hexdigest = digest.split(":")[1]
    stream = oci_archive.write_stream(config, ["example/x:1"], [(hexdigest, tmp_path / f"{hexdigest}.tar")] * 2,
                                      consume=True)
    first = next(stream)  # the config and manifest come first; the layer file is still there
    assert (tmp_path / f"{digest.split(':')[1]}.tar").exists()
    data = first + b"".join(stream)
    assert not list(tmp_path.iterdir())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
        assert tar.extractfile(f"{digest.split(':')[1]}/layer.tar").read() == layer_bytes
        assert tar.extractfile(names[0]).read() == config
    assert names == [f"{hashlib.sha256(config).hexdigest()}.json", "manifest.json", f"{digest.split(':')[1]}/layer.tar"]
    assert manifest == [{"Config": names[0], "RepoTags": ["example/x:1"], "Layers": [names[2], names[2]]}]


def test_layers_the_daemon_holds_are_listed_but_not_sent(tmp_path):
    """A layer repeated after the held prefix is still sent: the daemon needs it at that later position."""
    files = []
    for i in range(3):
        (tmp_path / f"{i}.tar").write_bytes(bytes([65 + i]) * 1024)
        files.append((f"{i:064x}", tmp_path / f"{i}.tar"))
    stream = oci_archive.write_stream(b"{}", ["example/x:1"], files + [files[0]], present=2)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert names[2:] == [f"{0:064x}/layer.tar", f"{2:064x}/layer.tar"]
    assert manifest[0]["Layers"] == [f"{i:064x}/layer.tar" for i in (0, 1, 2, 0)]
    assert all(path.exists() for _, path in files)  # not consumed: a failed load can send them all again


class _Api:
    def __init__(self, images, gone):
        self._images, self.gone = images, gone

    def images(self, all=False):
        return [{"Id": i} for i in self._images]

    def inspect_image(self, image_id):
        if image_id in self.gone:
            raise docker_errors.NotFound("No such image")
        return {"RootFS": {"Layers": self._images[image_id]}}


class _Daemon:
    """Stands in for docker's client in the load decision; the integration tests load the real cpu image."""

    def __init__(self, images, fail_partial=False, gone=(), driver_status=(("Backing Filesystem", "extfs"),)):
        self.api, self.images = _Api(dict(enumerate(images)), gone), self
        self.fail_partial, self.loads = fail_partial, []
        self.driver_status = [list(pair) for pair in driver_status]

    def info(self):
        return {"DriverStatus": self.driver_status}

    def load(self, stream):
        data = b"".join(stream)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            sent = [n for n in tar.getnames() if n.endswith("/layer.tar")]
        self.loads.append(sent)
        if self.fail_partial and len(self.loads) == 1:
            raise docker_errors.ImageLoadError("open /var/lib/docker/tmp/docker-import-1/x/layer.tar: no such file")


def test_present_prefix_counts_only_a_chain_from_the_first_layer():
    daemon = _Daemon([["a", "b", "c"], ["x", "y"]])
    assert reproducible.present_prefix(daemon, ["a", "b", "z"]) == 2
    assert reproducible.present_prefix(daemon, ["b", "c"]) == 0  # b alone is no chain the daemon holds
    assert reproducible.present_prefix(daemon, ["a", "b", "c", "d"]) == 3
    assert reproducible.present_prefix(_Daemon([]), ["a"]) == 0


def test_an_image_removed_while_looking_is_skipped_and_containerd_s_store_holds_nothing():
    assert reproducible.present_prefix(_Daemon([["a"], ["a", "b"]], gone=(1,)), ["a", "b"]) == 1
    containerd = _Daemon([["a"]], driver_status=(("driver-type", "io.containerd.snapshotter.v1"),))
    assert reproducible.present_prefix(containerd, ["a"]) == 0


def test_an_inspect_answer_of_another_shape_holds_nothing_instead_of_failing_the_build():
    for answer in ({"RootFS": None}, {"RootFS": "garbage"}, {"RootFS": {"Layers": 5}}, {"RootFS": {"Layers": None}}):
        daemon = _Daemon([["a"]])
        daemon.api.inspect_image = lambda image_id, answer=answer: answer
        assert reproducible.present_prefix(daemon, ["a"]) == 0, answer
    daemon = _Daemon([["a"]])
    daemon.api.inspect_image = lambda image_id: "not a dict"
    assert reproducible.present_prefix(daemon, ["a"]) == 0


def _rewritten(tmp_path, n):
    layers = []
    for i in range(n):
        hexdigest = f"{i:064x}"
        (tmp_path / f"{hexdigest}.tar").write_bytes(b"L" * 512)
        layers.append(reproducible.Layer(f"sha256:{hexdigest}"))
    return layers


def test_a_rebuild_the_daemon_already_holds_loads_no_layer_data(tmp_path):
    layers = _rewritten(tmp_path, 3)
    daemon = _Daemon([[layer.digest for layer in layers]])
    said = []
    reproducible._load(daemon, b"{}", ["example/x:1"], layers, tmp_path, said.append)
    assert daemon.loads == [[]] and "3 of 3 layers are already in the daemon" in said[0]


def test_when_the_held_layers_go_away_meanwhile_the_load_is_made_again_with_every_layer(tmp_path):
    layers = _rewritten(tmp_path, 3)
    daemon = _Daemon([[layers[0].digest, layers[1].digest]], fail_partial=True)
    said = []
    reproducible._load(daemon, b"{}", ["example/x:1"], layers, tmp_path, said.append)
    assert daemon.loads == [[f"{2:064x}/layer.tar"], [f"{i:064x}/layer.tar" for i in range(3)]]
    assert "sending all" in said[-1]


def test_the_config_gets_the_epoch_everywhere_and_loses_the_build_container():
    """What `docker save` gives for a fresh build: real times, the build container's id and config; after the
    rewrite only the epoch and what the image itself declares remain."""
    built = {"architecture": "amd64", "os": "linux", "created": "2026-07-01T02:24:11.123456789Z",
             "container": "3f1c0ffee", "container_config": {"Cmd": ["/bin/sh"]}, "docker_version": "20.10.24",
             "config": {"User": "2000:0", "Labels": {"io.dsv4-flash.target": "cpu"}},
             "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "debootstrap"},
                         {"created": "2026-07-01T02:24:10Z", "created_by": "RUN pip install", "empty_layer": True}],
             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}
    out = reproducible._normalize_config(built, ["sha256:" + "2" * 64], EPOCH)
    assert out == {"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
                   "config": {"User": "2000:0", "Labels": {"io.dsv4-flash.target": "cpu"}},
                   "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "debootstrap"},
                               {"created": "2026-01-01T00:00:00Z", "created_by": "RUN pip install", "empty_layer": True}],
                   "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "2" * 64]}}
