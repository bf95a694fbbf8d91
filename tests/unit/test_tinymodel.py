"""The tiny checkable model: deterministic, a real tokenizer, and a rule every output follows."""

import hashlib
import json

from safetensors import safe_open
from tokenizers import Tokenizer

from dsv4_images.in_image import tinymodel as tm


def test_vocabulary_and_cycle():
    assert len(tm.TOKENS) == tm.VOCAB_SIZE == tm.CONFIG["vocab_size"]
    assert len(tm.CYCLE) == len(tm.WORDS) == len(set(tm.WORDS))
    assert tm.next_token(tm.CYCLE[-1]) == tm.CYCLE[0]
    assert all(tm.next_token(t) in tm.CYCLE for t in range(tm.VOCAB_SIZE))


def test_rule_violations():
    seq = [tm.next_token(tm.BOS)]
    for _ in range(5):
        seq.append(tm.next_token(seq[-1]))
    assert tm.rule_violations(tm.BOS, seq) == []
    broken = seq[:2] + [seq[4]] + seq[3:]
    assert tm.rule_violations(tm.BOS, broken) == [2, 3]


def test_written_model_is_deterministic_and_loadable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    tm.write_model(a, seed=3, mtp_noise=0.9)
    tm.write_model(b, seed=3, mtp_noise=0.9)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "tokenizer_config.json"):
        assert hashlib.sha256((a / name).read_bytes()).digest() == hashlib.sha256((b / name).read_bytes()).digest()
    with safe_open(a / "model.safetensors", framework="numpy") as f:
        keys = set(f.keys())
    assert "model.layers.2.eh_proj.weight" in keys and "lm_head.weight" in keys
    assert json.loads((a / "config.json").read_text())["num_nextn_predict_layers"] == 1


def test_strip_mtp_leaves_the_mtp_layer_out(tmp_path):
    info = tm.write_model(tmp_path, with_mtp=False)
    with safe_open(tmp_path / "model.safetensors", framework="numpy") as f:
        assert not [k for k in f.keys() if k.startswith("model.layers.2.")]
    assert info["with_mtp"] is False


def test_the_tokenizer_encodes_words_as_single_tokens_and_decodes_the_cycle(tmp_path):
    tm.write_model(tmp_path)
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.encode(" apple").tokens == ["Ġapple"]
    assert tok.decode(tm.CYCLE[:4]) == " able about above across"
    assert tok.decode(tok.encode("def main(args): 你好").ids) == "def main(args): 你好"
