"""checkpoint.py reads safetensors headers, indexes and configs that it did not write: every malformed
file is a named one-line refusal, never a crash and never a read larger than the stated cap."""

import ast
import json
import struct
import sys
from pathlib import Path

import pytest

from dsv4_images.in_image import checkpoint as ck
from dsv4_images.in_image import tinymodel
from tests.unit.checkpoint_fixtures import header_json, write_raw, write_shard


def refusal(call, *args, **kwargs) -> ck.Refusal:
    with pytest.raises(ck.Refusal) as exc:
        call(*args, **kwargs)
    assert "\n" not in str(exc.value)
    return exc.value


def test_a_header_is_read_without_its_data(tmp_path):
    path = write_shard(tmp_path / "a.safetensors", {"x.weight": ("BF16", [3, 4]), "y": ("F32", [2])})
    assert ck.read_safetensors_header(path) == {"x.weight": ("BF16", [3, 4]), "y": ("F32", [2])}


def test_the_tiny_models_file_reads(tmp_path):
    tinymodel.write_model(tmp_path / "m", seed=0)
    tensors = ck.read_safetensors_header(tmp_path / "m" / "model.safetensors")
    assert tensors["model.layers.2.eh_proj.weight"] == ("BF16", [tinymodel.H, 2 * tinymodel.H])
    assert {dtype for dtype, _ in tensors.values()} == {"BF16", "F32"}


def _entry(**changes) -> bytes:
    header, _ = header_json({"x.weight": ("BF16", [2, 2])})
    header["x.weight"].update(changes)
    return json.dumps(header).encode()


@pytest.mark.parametrize("raw,data,length,reason", [
    (b"", 0, 0, "safetensors header is not valid JSON"),  # the length field alone: an empty header
    (b"{}", 0, 2 ** 63, f"declares a {2 ** 63}-byte safetensors header, over the 100000000-byte cap"),
    (b"{}", 0, 100_000_001, "over the 100000000-byte cap"),
    (b"{}", 0, 99_000_000, "is truncated: header says 99000000 bytes, the file holds 2 after the length"),
    (b"\xff\xfe{}", 0, None, "safetensors header is not UTF-8"),
    (b"{\"x\": ", 0, None, "safetensors header is not valid JSON"),
    (b"[1, 2]", 0, None, "safetensors header is a JSON list, not an object"),
    (b"\"text\"", 0, None, "safetensors header is a JSON str, not an object"),
    (b"[" * 200_000 + b"]" * 200_000, 0, None, "safetensors header is not valid JSON"),
    (b'{"a": {}, "a": {}}', 0, None, "duplicate key 'a'"),
    (b'{"__metadata__": [1]}', 0, None, "__metadata__ in the safetensors header is not an object"),
    (b'{"x": 5}', 0, None, "header entry 'x' is not an object"),
    (_entry(dtype="BF17"), 8, None, "tensor 'x.weight' has unknown dtype 'BF17'"),
    (_entry(dtype=None), 8, None, "has unknown dtype None"),
    (_entry(shape=[2, -2]), 8, None, "malformed shape [2, -2]"),
    (_entry(shape="2x2"), 8, None, "malformed shape '2x2'"),
    (_entry(shape=[2.0, 2]), 8, None, "malformed shape [2.0, 2]"),
    (_entry(shape=[True, 2]), 8, None, "malformed shape [True, 2]"),
    (_entry(), 4, None, "data_offsets [0, 8] outside the 4-byte data"),
    (_entry(data_offsets=[8, 0]), 8, None, "data_offsets [8, 0] outside"),
    (_entry(data_offsets=[0]), 8, None, "data_offsets [0] outside"),
    (_entry(data_offsets=[-8, 0]), 8, None, "data_offsets [-8, 0] outside"),
    (_entry(data_offsets=["0", "8"]), 8, None, "data_offsets ['0', '8'] outside"),
    (_entry(data_offsets=[0, 6]), 8, None, "spans 6 bytes, its BF16 shape [2, 2] needs 8 bytes"),
    (_entry(dtype="F4", shape=[3], data_offsets=[0, 2]), 8, None, "its F4 shape [3] needs 12 bits, not whole bytes"),
    (_entry(dtype=["BF16"]), 8, None, "has unknown dtype ['BF16']"),
    (_entry(dtype={"a": 1}), 8, None, "has unknown dtype {'a': 1}"),
    (_entry(shape=[10 ** 200] * 3), 8, None, "spans 8 bytes, its BF16 shape [1000000000000000000"),
    (_entry(shape=list(range(1, 60))), 8, None, "its BF16 shape [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ... needs"),
    (_entry(shape=[2] * 100_000), 8, None, "needs over 2**100004 bits"),
])
def test_a_malformed_header_is_a_named_refusal(tmp_path, raw, data, length, reason):
    path = write_raw(tmp_path / "bad.safetensors", raw, data, length)
    exc = refusal(ck.read_safetensors_header, path)
    assert exc.file == str(path) and reason in exc.reason and len(exc.reason) < 300


def test_a_file_shorter_than_the_length_field(tmp_path):
    path = tmp_path / "short.safetensors"
    for content in (b"", b"\x01\x02\x03"):
        path.write_bytes(content)
        exc = refusal(ck.read_safetensors_header, path)
        assert f"is truncated: {len(content)} bytes, less than the 8-byte header length" in exc.reason


def test_the_cap_is_checked_before_anything_is_read(tmp_path, monkeypatch):
    """A lying length is refused from the 8 length bytes alone: no read of the header is attempted."""
    path = write_raw(tmp_path / "huge.safetensors", b"{}", 0, 200_000_000)
    reads = []
    real_open = open

    def spy_open(*args, **kwargs):
        f = real_open(*args, **kwargs)
        real_read = f.read
        f.read = lambda n=-1: reads.append(n) or real_read(n)
        return f

    monkeypatch.setattr("builtins.open", spy_open)
    refusal(ck.read_safetensors_header, path)
    assert reads == [8]
    assert ck.read_safetensors_header(write_raw(tmp_path / "ok.safetensors", b"{}"), cap=2) == {}
    assert "over the 1-byte cap" in refusal(ck.read_safetensors_header, tmp_path / "ok.safetensors", cap=1).reason


def test_an_unreadable_file_is_a_refusal(tmp_path):
    exc = refusal(ck.read_safetensors_header, tmp_path)  # a directory
    assert exc.file == str(tmp_path) and "cannot be read" in exc.reason


@pytest.mark.parametrize("content,reason", [
    ("not json", "file is not valid JSON"),
    ("[]", "file is a JSON list, not an object"),
    ("{}", "has no weight_map object"),
    ('{"weight_map": []}', "weight_map is not an object"),
    ('{"weight_map": {"a": 3}}', "weight_map['a'] is 3, not a shard file name"),
    ('{"weight_map": {"a": ""}}', "weight_map['a'] is '', not a shard file name"),
    ('{"weight_map": {"a": "s", "b": ["s"]}}', "weight_map['b'] is ['s'], not a shard file name"),
    ('{"weight_map": {"a": "s", "b": {"s": 1}}}', "weight_map['b'] is {'s': 1}, not a shard file name"),
    ('{"weight_map": {"a": "../x.safetensors"}}', "names '../x.safetensors', outside the checkpoint directory"),
    ('{"weight_map": {"a": "/etc/x.safetensors"}}', "outside the checkpoint directory"),
    ('{"weight_map": {"a": "..\\\\x.safetensors"}}', "outside the checkpoint directory"),
    ('{"weight_map": {"a": "s"}, "weight_map": {}}', "duplicate key 'weight_map'"),
])
def test_a_malformed_index_is_a_named_refusal(tmp_path, content, reason):
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(content)
    exc = refusal(ck.read_index, path)
    assert exc.file == str(path) and reason in exc.reason


def test_json_files_are_read_up_to_a_cap(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"pad": "x" * 100}))
    assert "larger than the 50-byte cap" in refusal(ck.read_json_object, path, cap=50).reason
    assert ck.read_json_object(path)["pad"] == "x" * 100
    assert "cannot be read" in refusal(ck.read_json_object, tmp_path / "missing.json").reason


def test_checkpoint_py_imports_only_the_standard_library():
    tree = ast.parse(Path(ck.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    imported -= {"huggingface_hub"}  # optional, imported lazily and only when the image has it
    assert imported and imported <= set(sys.stdlib_module_names), imported
    assert not any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(tree))


def test_mutated_headers_and_indexes_are_read_or_refused_never_crash(tmp_path):
    """Misbehaviour nobody designed a case for: 400 seeded random edits (byte flips, cuts, insertions) of a
    good shard, and 200 of a good index, each either parses or is a Refusal naming that file."""
    import random
    from tests.unit.checkpoint_fixtures import v4_checkpoint, v4_mtp_stage
    rng = random.Random(11)
    good = write_shard(tmp_path / "good.safetensors", v4_mtp_stage()).read_bytes()
    outcomes = {"read": 0, "refused": 0}

    def mutate(data: bytes) -> bytes:
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op, at = rng.choice("fcid"), rng.randrange(len(data) or 1)
            if op == "f" and data:
                data[at] = rng.randrange(256)
            elif op == "c":
                del data[at:]
            elif op == "i":
                data[at:at] = bytes(rng.choice([b"{", b"}", b"[", b'"', b",", b"1e999", b"-", b"\x00"]))
            elif op == "d" and data:
                del data[at:at + rng.randint(1, 9)]
        return bytes(data)

    path = tmp_path / "mutated.safetensors"
    for _ in range(400):
        path.write_bytes(mutate(good))
        try:
            ck.read_safetensors_header(path)
            outcomes["read"] += 1
        except ck.Refusal as exc:
            assert exc.file == str(path) and "\n" not in str(exc)
            outcomes["refused"] += 1
    root = v4_checkpoint(tmp_path / "ckpt")
    index = root / "model.safetensors.index.json"
    good_index = index.read_bytes()
    for _ in range(200):
        index.write_bytes(mutate(good_index))
        try:
            ck.check_mtp(str(root), {})
            outcomes["read"] += 1
        except ck.Refusal as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 300 and sum(outcomes.values()) == 600, outcomes
