"""The tiny checkable model: deterministic, a real tokenizer, and a rule every output follows."""

import hashlib
import json

import numpy as np
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


def _as_bf16(array):
    """What the checkpoint stores: the float32 values rounded through bfloat16."""
    return (np.frombuffer(tm._bf16(array), "<u2").astype(np.uint32) << 16).view(np.float32).reshape(array.shape)


def test_the_weights_make_the_greedy_next_token_follow_the_rule():
    """Every block's output projection is zero, so the last hidden state is the token's own embedding: the
    greedy token is argmax(lm_head @ norm(embed[t])), and for every token of the vocabulary that is next(t).
    The MTP layer keeps the embedding half of [embedding | hidden] and shares lm_head, so it drafts the same."""
    w = tm.weights(seed=0, mtp_noise=0.9)
    for i in range(tm.LAYERS):
        outputs = [k for k in w if k.startswith(f"model.layers.{i}.") and k.endswith(("o_proj.weight", "down_proj.weight"))]
        assert outputs and all(not w[k].any() for k in outputs), i
    embed, lm_head = _as_bf16(w["model.embed_tokens.weight"]), _as_bf16(w["lm_head.weight"])
    greedy = np.argmax(embed @ lm_head.T, axis=1)  # RMSNorm only rescales each row: the argmax is the same
    assert greedy.tolist() == [tm.next_token(t) for t in range(tm.VOCAB_SIZE)]
    mtp = f"model.layers.{tm.LAYERS}."
    e, h = np.random.default_rng(1).standard_normal((2, tm.H)).astype(np.float32)
    assert np.array_equal(w[mtp + "eh_proj.weight"] @ np.concatenate([e, h]), e)
    assert np.array_equal(w[mtp + "shared_head.head.weight"], w["lm_head.weight"])
    assert np.array_equal(w[mtp + "embed_tokens.weight"], w["model.embed_tokens.weight"])
    assert w[mtp + "self_attn.o_proj.weight"].std() > 0.5  # the noise is in the MTP block only
    assert not tm.weights(seed=0, mtp_noise=0.0)[mtp + "self_attn.o_proj.weight"].any()


def test_a_different_seed_makes_different_weights_the_same_seed_the_same():
    a, b, c = (tm.weights(seed, 0.9)["model.embed_tokens.weight"] for seed in (3, 3, 4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bfloat16_rounds_to_nearest_even():
    values = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2.5], np.float32)
    # 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: to the even one (1.0); 1 + 3*2^-8 is halfway
    # between 1.0078125 and 1.015625: to the even one (1.015625); just above halfway rounds up.
    assert np.frombuffer(tm._bf16(values), "<u2").tolist() == [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC020]
