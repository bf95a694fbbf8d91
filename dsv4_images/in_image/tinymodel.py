"""A tiny DeepSeek-V3 checkpoint with one MTP layer whose every output token is checkable.

    python tinymodel.py OUT_DIR [--seed 0] [--mtp-noise 0.0] [--strip-mtp]

Needs only numpy (it runs inside the image build and on the host). The model recites a fixed
word list: the vocabulary holds a byte-level BPE tokenizer whose full-word tokens " able",
" about", ... form a cycle, and the weights are built so that the greedy next token is always

    next(t) = CYCLE[(CYCLE.index(t) + 1) % len(CYCLE)]   for a word token t
    next(t) = CYCLE[t % len(CYCLE)]                       for any other token

so a correct output reads " coffee color common copy corner ..." and any token that breaks the
rule is corruption. How: every block's output projection is zero, so the final hidden state is
the current token's embedding, and lm_head row next(t) holds the unit embedding of t (logit
margin ~25). The MTP layer (model.layers.{N}) keeps only the embedding of its input token
(eh_proj = [I | 0]) and shares lm_head, so it drafts the same rule: 100% acceptance. --mtp-noise
puts Gaussian noise of that std into the MTP block's output projections only: drafts are then
sometimes wrong while the target stays exact (acceptance below 100%, tunable, reproducible).
--strip-mtp writes the same checkpoint without its MTP tensors (a stripped export).
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

SPECIALS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
BOS, EOS, PAD = 0, 1, 2
VOCAB_SIZE = 2048

WORDS = """able about above across act add after again age ago air all almost alone along also always
among and animal answer any appear apple area arm around art ask back ball bank base bear beat
bed begin bell best better between big bird black blue board boat body bone book both bottom box
boy bread break bring brother brown build burn busy buy call came camp can car care carry case cat
catch cause cell center chair chance change check child city class clean clear climb clock close
cloud coast coat cold color come common copy corner cost cotton count country course cover cow
cross crowd cry cup current cut dance dark day dead deal dear deep desert design detail develop
die differ direct dog dollar door double down draw dream dress drink drive drop dry during each
early earth east eat edge effect egg eight element end enemy energy enough enter equal even
event ever every exact example except excite exercise expect experience eye face fact fair fall
family far farm fast father favor fear feed feel few field fig fill final find fine finger
finish fire first fish fit five flat floor flow flower fly follow food foot force forest form
forward found four free fresh friend front fruit full fun game garden gas gather gentle girl
give glad glass go gold good grand grass gray great green ground group grow guess guide gun hair
half hand happen happy hard hat have head hear heart heat heavy help high hill history hold hole
home hope horse hot hour house huge human hundred hunt hurry ice idea inch insect iron island
join joy jump just keep key kind king kitchen know lake land large last late laugh lead learn
leave left leg length less letter level lie life lift light like line list listen little live
long look lost love low machine made main major make man many map mark market mass master match
material matter may meal mean meat meet melody metal middle might mile milk million mind minute
miss mix modern moment money month moon more morning most mother motion mountain mouth move much
music must name nation nature near neck need never new next night nine noise noon north nose note
nothing notice noun now number object ocean off offer office often oil old once one only open
order other our out over own page paint pair paper park part party pass past path pattern pay
people perhaps person pick picture piece place plain plan plant play please poem point pool poor
port position possible post pound power press pretty print problem produce protect proud prove
pull push put quick quiet quite race radio rain raise range rather reach read ready real reason
receive record red region remember repeat reply rest result rich ride right ring rise river road
rock roll room root rope rose round row rule run safe sail salt same sand save say school science
sea season seat second see seed self sell send sense sentence serve set settle seven shape share
sharp sheep shell shine ship shoe shop short shoulder show side sign silent silver simple sing
sister sit six size skill skin sky sleep slow small smell smile snow soft soil soldier solve song
soon sound south space speak special speed spell spend spring square stand star start state stay
steam steel step stick still stone stop store story straight strange stream street strong study
subject success sugar suit summer sun supply sure surface swim table tail take talk tall teach
team tell ten test thank thick thin thing think third three through throw tie time tiny tire
together tone tool top total touch town track trade train travel tree trip true try tube turn
twenty two type under unit until use usual valley value very view village visit voice vowel wait
walk wall want warm wash watch water wave way wear weather week weight well west wheel while
white whole wide wife wild win wind window wing winter wire wish woman wonder wood word work
world write yard year yellow young""".split()


def _byte_alphabet() -> list[str]:
    """GPT-2's byte -> printable unicode map (what the ByteLevel pre-tokenizer produces)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary() -> tuple[list[str], list[str], list[int]]:
    """(tokens by id, BPE merges, the cycle of full-word token ids)."""
    tokens = list(SPECIALS) + _byte_alphabet()
    known = set(tokens)
    merges, words = [], []
    for length in range(2, max(len(w) for w in WORDS) + 2):
        for word in WORDS:
            piece = "Ġ" + word
            if len(piece) >= length:
                token = piece[:length]
                if token not in known:
                    known.add(token)
                    tokens.append(token)
                    merges.append(f"{token[:-1]} {token[-1]}")
    reserved = VOCAB_SIZE - len(tokens)
    if reserved < 0:
        raise ValueError(f"word list needs {len(tokens)} tokens, more than VOCAB_SIZE={VOCAB_SIZE}")
    tokens += [f"<|reserved_{i}|>" for i in range(reserved)]
    index = {t: i for i, t in enumerate(tokens)}
    cycle = [index["Ġ" + w] for w in WORDS]
    return tokens, merges, cycle


TOKENS, MERGES, CYCLE = vocabulary()
_POSITION = {t: i for i, t in enumerate(CYCLE)}


def next_token(t: int) -> int:
    """The rule every correct output token follows, given the token before it."""
    if t in _POSITION:
        return CYCLE[(_POSITION[t] + 1) % len(CYCLE)]
    return CYCLE[t % len(CYCLE)]


def rule_violations(previous: int, generated: list[int]) -> list[int]:
    """Positions in `generated` whose token is not next() of the token before it."""
    sequence = [previous] + list(generated)
    return [i - 1 for i in range(1, len(sequence)) if sequence[i] != next_token(sequence[i - 1])]


# ---- config, tokenizer, weights ------------------------------------------------------------

H, LAYERS, HEADS = 256, 2, 4
Q_LORA, KV_LORA = 128, 512          # vLLM's CPU MLA kernels need kv_lora_rank 512
NOPE, ROPE, V_DIM = 64, 64, 64      # ... and qk_rope_head_dim 64
I_DENSE, I_MOE = 512, 128
EXPERTS, TOP_K, SHARED = 8, 2, 1

CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": VOCAB_SIZE, "hidden_size": H, "intermediate_size": I_DENSE, "moe_intermediate_size": I_MOE,
    "num_hidden_layers": LAYERS, "num_nextn_predict_layers": 1,
    "num_attention_heads": HEADS, "num_key_value_heads": HEADS,
    "q_lora_rank": Q_LORA, "kv_lora_rank": KV_LORA,
    "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE, "v_head_dim": V_DIM,
    "n_routed_experts": EXPERTS, "num_experts_per_tok": TOP_K, "n_shared_experts": SHARED,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "n_group": 2, "topk_group": 1,
    "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": True, "routed_scaling_factor": 2.5,
    "hidden_act": "silu", "rms_norm_eps": 1e-6, "max_position_embeddings": 4096,
    "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True, "initializer_range": 0.02,
}

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


def tokenizer_files() -> dict[str, dict]:
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, t in enumerate(TOKENS) if t in SPECIALS or t.startswith("<|reserved_")]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": byte_level, "post_processor": {**byte_level, "trim_offsets": False}, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(TOKENS)}, "merges": MERGES},
    }
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "pad_token": "<pad>", "add_bos_token": False, "add_eos_token": False, "model_max_length": 4096,
              "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE}
    return {"tokenizer.json": tokenizer, "tokenizer_config.json": config,
            "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
            "generation_config.json": {"bos_token_id": BOS, "eos_token_id": EOS, "do_sample": False},
            "config.json": CONFIG}


def weights(seed: int, mtp_noise: float, with_mtp: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))

    def rnd(*shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    def out_proj(*shape, noise=0.0):
        return rnd(*shape, std=noise) if noise > 0 else np.zeros(shape, np.float32)

    embed = rng.standard_normal((VOCAB_SIZE, H), dtype=np.float32)
    unit = embed / np.linalg.norm(embed, axis=1, keepdims=True)
    lm_head = np.zeros((VOCAB_SIZE, H), np.float32)
    for t in range(VOCAB_SIZE):
        lm_head[next_token(t)] += 2.0 * unit[t]

    def block(prefix: str, moe: bool, noise: float) -> dict:
        w = {prefix + "input_layernorm.weight": np.ones(H, np.float32),
             prefix + "post_attention_layernorm.weight": np.ones(H, np.float32)}
        a = prefix + "self_attn."
        w[a + "q_a_proj.weight"] = rnd(Q_LORA, H)
        w[a + "q_a_layernorm.weight"] = np.ones(Q_LORA, np.float32)
        w[a + "q_b_proj.weight"] = rnd(HEADS * (NOPE + ROPE), Q_LORA)
        w[a + "kv_a_proj_with_mqa.weight"] = rnd(KV_LORA + ROPE, H)
        w[a + "kv_a_layernorm.weight"] = np.ones(KV_LORA, np.float32)
        w[a + "kv_b_proj.weight"] = rnd(HEADS * (NOPE + V_DIM), KV_LORA)
        w[a + "o_proj.weight"] = out_proj(H, HEADS * V_DIM, noise=noise)
        m = prefix + "mlp."
        if not moe:
            w[m + "gate_proj.weight"] = rnd(I_DENSE, H)
            w[m + "up_proj.weight"] = rnd(I_DENSE, H)
            w[m + "down_proj.weight"] = out_proj(H, I_DENSE, noise=noise)
            return w
        w[m + "gate.weight"] = rnd(EXPERTS, H)
        w[m + "gate.e_score_correction_bias"] = np.zeros(EXPERTS, np.float32)
        for e in range(EXPERTS):
            x = f"{m}experts.{e}."
            w[x + "gate_proj.weight"] = rnd(I_MOE, H)
            w[x + "up_proj.weight"] = rnd(I_MOE, H)
            w[x + "down_proj.weight"] = out_proj(H, I_MOE, noise=noise)
        x = m + "shared_experts."
        w[x + "gate_proj.weight"] = rnd(I_MOE * SHARED, H)
        w[x + "up_proj.weight"] = rnd(I_MOE * SHARED, H)
        w[x + "down_proj.weight"] = out_proj(H, I_MOE * SHARED, noise=noise)
        return w

    tensors = {"model.embed_tokens.weight": embed, "model.norm.weight": np.ones(H, np.float32), "lm_head.weight": lm_head}
    for i in range(LAYERS):
        tensors.update(block(f"model.layers.{i}.", moe=i >= CONFIG["first_k_dense_replace"], noise=0.0))
    mtp = f"model.layers.{LAYERS}."
    mtp_tensors = block(mtp, moe=True, noise=mtp_noise)
    mtp_tensors.update({
        mtp + "enorm.weight": np.ones(H, np.float32), mtp + "hnorm.weight": np.ones(H, np.float32),
        mtp + "eh_proj.weight": np.concatenate([np.eye(H, dtype=np.float32), np.zeros((H, H), np.float32)], axis=1),
        mtp + "shared_head.norm.weight": np.ones(H, np.float32),
        mtp + "shared_head.head.weight": lm_head.copy(), mtp + "embed_tokens.weight": embed.copy(),
    })
    if with_mtp:
        tensors.update(mtp_tensors)
    return tensors


def _bf16(array: np.ndarray) -> bytes:
    """float32 -> bfloat16 bytes, round to nearest even."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2").tobytes()


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors format: u64 header length, JSON header, raw little-endian data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        array = tensors[name]
        if name.endswith("e_score_correction_bias"):
            dtype, data = "F32", np.ascontiguousarray(array, dtype="<f4").tobytes()
        else:
            dtype, data = "BF16", _bf16(array)
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def write_model(out: Path, seed: int = 0, mtp_noise: float = 0.0, with_mtp: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for name, content in tokenizer_files().items():
        (out / name).write_text(json.dumps(content, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    tensors = weights(seed, mtp_noise, with_mtp)
    write_safetensors(out / "model.safetensors", tensors)
    info = {"generator": "dsv4_images/in_image/tinymodel.py", "seed": seed, "mtp_noise": mtp_noise, "with_mtp": with_mtp,
            "tensors": len(tensors), "parameters": int(sum(a.size for a in tensors.values())),
            "rule": "next(t) = CYCLE[(CYCLE.index(t) + 1) % len(CYCLE)] for word tokens, CYCLE[t % len(CYCLE)] otherwise",
            "cycle": CYCLE}
    (out / "tiny_model.json").write_text(json.dumps(info, sort_keys=True) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mtp-noise", type=float, default=0.0)
    parser.add_argument("--strip-mtp", action="store_true", help="leave the MTP layer's tensors out")
    args = parser.parse_args()
    info = write_model(args.out, args.seed, args.mtp_noise, not args.strip_mtp)
    print(f"wrote {args.out}: {info['tensors']} tensors, {info['parameters'] / 1e6:.2f}M parameters, "
          f"seed {args.seed}, mtp noise {args.mtp_noise}{', MTP stripped' if args.strip_mtp else ''}")


if __name__ == "__main__":
    main()
