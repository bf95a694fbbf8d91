"""Tiny synthetic checkpoints for the preflight tests: safetensors files made of an 8-byte length, a JSON
header and zero bytes, an index and a config. Shapes are tiny; only names, dtypes and layout matter."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BITS = {"BF16": 16, "F16": 16, "F32": 32, "F8_E4M3": 8, "F8_E8M0": 8, "U8": 8, "I8": 8, "I32": 32, "I64": 64}


def header_json(tensors: dict[str, tuple[str, list[int]]], metadata: dict | None = None) -> tuple[dict, int]:
    header, offset = {"__metadata__": metadata or {"format": "pt"}}, 0
    for name, (dtype, shape) in tensors.items():
        size = BITS[dtype] // 8
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    return header, offset


def write_raw(path: Path, header: bytes, data_size: int = 0, length: int | None = None) -> Path:
    """The safetensors byte layout, with an optionally lying length field."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + bytes(data_size))
    return path


def write_shard(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> Path:
    header, size = header_json(tensors)
    return write_raw(path, json.dumps(header).encode(), size)


def write_checkpoint(root: Path, shards: dict[str, dict[str, tuple[str, list[int]]]], config: dict,
                     write_shards: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    weight_map = {name: shard for shard, tensors in shards.items() for name in tensors}
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if write_shards:
        for shard, tensors in shards.items():
            write_shard(root / shard, tensors)
    return root


# ---- DeepSeek-V4 layouts ---------------------------------------------------------------------

LAYERS = 2
V4_CONFIG = {"architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
             "num_hidden_layers": LAYERS, "num_nextn_predict_layers": 1}
W = [2, 2]


def v4_main(layers: int = LAYERS) -> dict:
    """Main weights as the NVFP4-FP8 export has them: FP8 attention with scales, packed NVFP4 experts."""
    t = {"embed.weight": ("BF16", W), "head.weight": ("BF16", W), "norm.weight": ("BF16", [2])}
    for k in range(layers):
        p = f"layers.{k}."
        for m in ("wq_a", "wq_b", "wkv", "wo_a", "wo_b"):
            t[p + f"attn.{m}.weight"] = ("F8_E4M3", W)
            t[p + f"attn.{m}.weight_scale"] = ("F32", [1, 1])
        t[p + "ffn.experts.0.w1.weight_packed"] = ("U8", [2, 1])
        t[p + "ffn.experts.0.w1.weight_scale"] = ("F8_E4M3", [2, 1])
        t[p + "ffn.experts.0.w1.weight_global_scale"] = ("F32", [1])
        t[p + "attn_norm.weight"] = ("BF16", [2])
    return t


def v4_mtp_stage(stage: int = 0, dtype: str = "BF16") -> dict:
    """One DeepSeek-V4 MTP block, unquantized (names from public DSV4 MTP loaders and exports)."""
    p = f"mtp.{stage}."
    t = {p + n: (dtype, W) for n in ("e_proj.weight", "h_proj.weight", "emb.tok_emb.weight", "head.weight",
                                     "attn.wq_a.weight", "attn.wq_b.weight", "attn.wkv.weight", "attn.wo_a.weight",
                                     "attn.wo_b.weight", "ffn.gate.weight", "ffn.experts.0.w1.weight",
                                     "ffn.experts.0.w2.weight", "ffn.shared_experts.w1.weight")}
    t.update({p + n: (dtype, [2]) for n in ("enorm.weight", "hnorm.weight", "norm.weight", "attn_norm.weight",
                                            "ffn_norm.weight")})
    t.update({p + n: ("F32", [2]) for n in ("attn.attn_sink", "ffn.gate.bias", "hc_attn_fn", "hc_attn_base",
                                            "hc_attn_scale", "hc_ffn_fn", "hc_ffn_base", "hc_ffn_scale",
                                            "hc_head_fn", "hc_head_base", "hc_head_scale")})
    return t


def dspark_stages(stages: int = 3) -> dict:
    """A DSpark drafter stored under mtp.* as DeepSeek-V4-Flash-0731 has it (vllm#41834 lists its index:
    mtp.0-2, markov_head on the last stage, no eh_proj/enorm/hnorm; DSpark loaders name main_proj,
    main_norm on stage 0 and markov_head, confidence_head, norm on the last)."""
    t = {}
    for s in range(stages):
        p = f"mtp.{s}."
        t.update({p + n: ("BF16", W) for n in ("attn.wq_a.weight", "attn.wq_b.weight", "attn.wkv.weight",
                                               "attn.wo_a.weight", "attn.wo_b.weight", "ffn.gate.weight",
                                               "ffn.experts.0.w1.weight", "ffn.shared_experts.w1.weight")})
        t.update({p + n: ("F32", [2]) for n in ("hc_attn_fn", "hc_ffn_fn", "attn.attn_sink")})
        t.update({p + n: ("BF16", [2]) for n in ("attn_norm.weight", "ffn_norm.weight")})
    last = f"mtp.{stages - 1}."
    t.update({"mtp.0.main_proj.weight": ("BF16", W), "mtp.0.main_norm.weight": ("BF16", [2]),
              last + "norm.weight": ("BF16", [2]), last + "hc_head_fn": ("F32", [2]),
              last + "markov_head.markov_w1.weight": ("BF16", W), last + "markov_head.markov_w2.weight": ("BF16", W),
              last + "confidence_head.proj.weight": ("BF16", [1, 2])})
    return t


DSPARK_CONFIG = {**V4_CONFIG, "dspark_block_size": 5, "dspark_target_layer_ids": [0, 1],
                 "dspark_markov_rank": 256, "dspark_noise_token_id": 7}


def v4_checkpoint(root: Path, mtp: dict | None = None, config: dict | None = None, **kw) -> Path:
    """Main weights in shard 1, the MTP block (default: one BF16 stage) in shard 2."""
    return write_checkpoint(root, {"model-00001-of-00002.safetensors": v4_main(),
                                   "model-00002-of-00002.safetensors": v4_mtp_stage() if mtp is None else mtp},
                            V4_CONFIG if config is None else config, **kw)
