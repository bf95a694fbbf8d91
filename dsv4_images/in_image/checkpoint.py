"""What the serve preflight knows about checkpoints (standard library only).

Copied into every image next to entrypoint.py (/opt/dsv4-flash/). When MTP is requested,

    check_mtp(model, env, profile=None) -> a one-line summary, or raises Refusal(file, reason)

reads config.json, the safetensors index and, where the shards are reachable, only their headers, and
judges the checkpoint against the expectations of its PROFILE (one dict below, keyed by model id or
architecture; a model id wins over its architecture, an explicit profile wins over both).

| case                                                              | read from              | verdict            |
|-------------------------------------------------------------------|------------------------|--------------------|
| num_nextn_predict_layers 0, absent or malformed (V3/V4 profiles)  | config.json            | refused            |
| no MTP tensors (mtp.{i}.* / model.layers.{L+i}.*)                  | index (or headers)     | refused            |
| MTP tensor families the profile does not know (DSpark's main_proj,| index, config dspark_* | refused, named as  |
|   markov_head, confidence_head) or a stage without e_proj/h_proj  |                        | DSpark if it is one|
| MTP stages other than 0..n-1, main layers other than 0..L-1       | index + config.json    | refused            |
| quantization suffixes under the MTP prefix, profile expects BF16  | index                  | refused            |
| MTP weights not BF16/F32 in the shard headers, profile wants BF16 | shard headers          | refused            |
| index names a tensor its shard's header lacks                     | shard header           | refused            |
| config/index not JSON or not an object, no weight_map, unsafe or  | that file              | refused            |
|   non-string shard names, a file over its size cap                |                        |                    |
| header truncated, over HEADER_CAP, not UTF-8/JSON/an object,      | that shard             | refused            |
|   duplicate keys, unknown dtype, bad shape or offsets             |                        |                    |
| shard named by the index missing from a local directory           | index                  | refused            |
| same, in a Hugging Face cache snapshot (vLLM downloads the rest)  | -                      | header not checked |
| not local and the Hub unreachable or offline; no safetensors      | -                      | "not checked"      |

A refusal is one line: the file, then the reason. No read is larger than its cap (HEADER_CAP for a
safetensors header, JSON_FILE_CAP for config.json and the index); tensor data is never read.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path, PurePosixPath

INDEX_NAME = "model.safetensors.index.json"
HEADER_CAP = 100_000_000      # bytes; the safetensors format's own limit on a header (MAX_HEADER_SIZE)
JSON_FILE_CAP = 64 << 20      # config.json and the index (DeepSeek-V4-Flash's index is a few MB)
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
              "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64,
              "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
FLOAT_DTYPES = {d for d in DTYPE_BITS if d.startswith(("F", "BF", "C"))}

# A tensor whose last name component is one of these belongs to a quantized layer (compressed-tensors,
# ModelOpt, DeepSeek's own FP8 `.scale`, GPTQ/AWQ, bitsandbytes, Ascend W8A8).
QUANT_SUFFIXES = {"weight_scale", "weight_scale_inv", "weight_scale_2", "weight_global_scale", "input_scale",
                  "input_global_scale", "output_scale", "weight_packed", "weight_zero_point", "weight_shape",
                  "weight_g_idx", "weight_offset", "scale", "qweight", "qzeros", "scales", "g_idx", "SCB",
                  "absmax", "quant_map", "nested_absmax", "nested_quant_map"}
QUANT_SUFFIX_PATTERNS = ("quant_state*",)  # any component: bitsandbytes' weight.quant_state.bitsandbytes__nf4


def is_quantization_tensor(name: str) -> bool:
    parts = name.split(".")
    return parts[-1] in QUANT_SUFFIXES or any(fnmatch.fnmatchcase(part, pattern) for part in parts[1:]
                                              for pattern in QUANT_SUFFIX_PATTERNS)


_V4_FAMILIES = ["e_proj", "h_proj", "enorm", "hnorm", "norm", "emb", "head", "attn", "ffn", "attn_norm",
                "ffn_norm", "hc_attn_*", "hc_ffn_*", "hc_head_*"]
_V4_ATTN = ["attn.wq_a", "attn.wq_b", "attn.wkv", "attn.wo_a", "attn.wo_b"]

# Per-model expectations. Keys: a Hugging Face model id, an architecture (config.json "architectures"), or
# "default". Fields (FIELD_DEFAULTS when absent): doc; base (inherit, then override); aliases (model_type values that select an
# architecture entry); layout (where MTP stage i lives: {i} = stage, {n} = num_hidden_layers + i; None =
# only look for mtp.* or model.layers.{L+i}.*); main_layers (where main layer k lives); nextn_key (config
# key that must be >= 1); families (allowed first name components inside a stage, fnmatch patterns);
# required (modules every stage must hold: any tensor under stage + module + "."); drafters (other drafters
# known to use the same prefix, by their marker families and config keys); weight_dtypes (None = any;
# else float weights must have one of these, and no quantization suffix may appear).
FIELD_DEFAULTS = {"layout": None, "main_layers": [], "nextn_key": None, "families": ["*"], "required": [],
                  "drafters": {}, "weight_dtypes": None}
PROFILES: dict[str, dict] = {
    "default": {
        "doc": "unknown architecture: only checks that some MTP tensors exist (mtp.* or model.layers.{L+i}.*)",
        "layout": None,
    },
    "DeepseekV4ForCausalLM": {
        "doc": "DeepSeek-V4 export (mtp.{i}.*); dtypes not fixed, deepseek-ai's own export keeps MTP in FP8",
        "aliases": ["deepseek_v4"],
        "layout": "mtp.{i}.", "main_layers": ["layers.{k}.", "model.layers.{k}."],
        "nextn_key": "num_nextn_predict_layers",
        "families": _V4_FAMILIES,
        "required": ["e_proj", "h_proj", "enorm", "hnorm", "norm", *_V4_ATTN, "ffn"],
        "drafters": {"DSpark": {"families": ["main_proj", "main_norm", "markov_head", "confidence_head"],
                                "config_prefix": "dspark_",
                                "note": "vLLM's method=mtp half-loads it (vllm#41834); serve it as DSpark"}},
        "weight_dtypes": None,
    },
    "DeepseekV3ForCausalLM": {
        "doc": "DeepSeek-V3-style export: MTP layer i is model.layers.{num_hidden_layers + i}.* (the cpu tiny model)",
        "aliases": ["deepseek_v3", "deepseek_v32", "DeepseekV32ForCausalLM"],
        "layout": "model.layers.{n}.", "main_layers": ["model.layers.{k}."],
        "nextn_key": "num_nextn_predict_layers",
        "families": ["embed_tokens", "enorm", "hnorm", "eh_proj", "shared_head", "input_layernorm",
                     "post_attention_layernorm", "self_attn", "mlp"],
        "required": ["enorm", "hnorm", "eh_proj", "shared_head", "self_attn", "mlp"],
        "weight_dtypes": None,
    },
    "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP": {
        "base": "DeepseekV4ForCausalLM",
        "doc": "model card: mtp.0.* (799 tensors) kept BF16; its verify_mtp_quantized.py wants e_proj, h_proj, "
               "emb.tok_emb, attn.{wq_a,wq_b,wkv,wo_a,wo_b} and no quant-scale suffix",
        "required": ["e_proj", "h_proj", "enorm", "hnorm", "norm", "emb.tok_emb", *_V4_ATTN, "ffn"],
        "weight_dtypes": ["BF16", "F32"],
    },
    "canada-quant/DeepSeek-V4-Flash-W4A16-FP8-MTP": {
        "base": "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP",
        "doc": "model card: MTP block mtp.0.* BF16, hc_* plumbing FP32, mtp.0.emb.tok_emb BF16",
    },
}


class Refusal(Exception):
    """The checkpoint cannot serve MTP as requested: `file` says where, `reason` why (one line)."""

    def __init__(self, file: str | Path, reason: str):
        self.file, self.reason = str(file).replace("\n", "\\n"), " ".join(str(reason).split())
        super().__init__(f"{self.file}: {self.reason}")


class Profile(dict):
    """One resolved PROFILES entry (its `base` chain merged), with the key it came from."""

    def __init__(self, key: str):
        entry = PROFILES[key]
        merged = dict(Profile(entry["base"])) if "base" in entry else dict(FIELD_DEFAULTS)
        merged.update({k: v for k, v in entry.items() if k != "base"})
        super().__init__(merged)
        self.key = key


def profile_for(model: str, config: dict, explicit: str | None = None) -> Profile:
    if explicit is not None:
        if explicit not in PROFILES:
            raise Refusal("checkpoint profile", f"{explicit!r} is not one of {', '.join(sorted(PROFILES))}")
        return Profile(explicit)
    if model in PROFILES and model != "default":
        return Profile(model)
    architectures = config.get("architectures")
    names = [a for a in architectures if isinstance(a, str)] if isinstance(architectures, list) else []
    names.append(config.get("model_type"))
    for name in names:
        for key, entry in PROFILES.items():
            if "/" not in key and key != "default" and (name == key or name in entry.get("aliases", [])):
                return Profile(key)
    return Profile("default")


# ---- reading files safely --------------------------------------------------------------------

def _short(value, limit: int = 80) -> str:
    """repr, cut: a value read from a file may be any size."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {_short(key)}")
        seen[key] = value
    return seen


def read_json_object(path: Path, label: str | None = None, cap: int = JSON_FILE_CAP) -> dict:
    label = label or str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(cap + 1)
    except OSError as exc:
        raise Refusal(label, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > cap:
        raise Refusal(label, f"is larger than the {cap}-byte cap for a JSON file")
    return _parse_object(raw, label, "file")


def _parse_object(raw: bytes, label: str, what: str) -> dict:
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise Refusal(label, f"{what} is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise Refusal(label, f"{what} is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(value, dict):
        raise Refusal(label, f"{what} is a JSON {type(value).__name__}, not an object")
    return value


def read_index(path: Path, label: str | None = None) -> dict[str, str]:
    """tensor name -> shard file name, from model.safetensors.index.json."""
    label = label or str(path)
    weight_map = read_json_object(path, label).get("weight_map")
    if not isinstance(weight_map, dict):
        raise Refusal(label, "has no weight_map object" if weight_map is None else "weight_map is not an object")
    safe = set()  # each shard name is checked once: an index names a few dozen files for ~100k tensors
    for name, shard in weight_map.items():
        if isinstance(shard, str) and shard in safe:
            continue
        if not isinstance(shard, str) or not shard.strip():
            raise Refusal(label, f"weight_map[{_short(name)}] is {_short(shard)}, not a shard file name")
        parts = PurePosixPath(shard.replace("\\", "/"))
        if parts.is_absolute() or ".." in parts.parts:
            raise Refusal(label, f"weight_map[{_short(name)}] names {_short(shard)}, outside the checkpoint directory")
        safe.add(shard)
    return weight_map


def read_safetensors_header(path: Path, cap: int = HEADER_CAP) -> dict[str, tuple[str, list[int]]]:
    """tensor name -> (dtype, shape), from the header alone: 8-byte little-endian length, then JSON."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) < 8:
                raise Refusal(path, f"is truncated: {size} bytes, less than the 8-byte header length")
            length = int.from_bytes(raw, "little")
            if length > cap:
                raise Refusal(path, f"declares a {length}-byte safetensors header, over the {cap}-byte cap")
            if 8 + length > size:
                raise Refusal(path, f"is truncated: header says {length} bytes, the file holds {size - 8} after the length")
            header = _parse_object(f.read(length), str(path), "safetensors header")
    except OSError as exc:
        raise Refusal(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    data_size = size - 8 - length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise Refusal(path, "__metadata__ in the safetensors header is not an object")
            continue
        tensors[name] = _tensor_entry(path, name, info, data_size)
    return tensors


def _tensor_entry(path: Path, name: str, info, data_size: int) -> tuple[str, list[int]]:
    tensor = f"tensor {_short(name)}"
    if not isinstance(info, dict):
        raise Refusal(path, f"header entry {_short(name)} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise Refusal(path, f"{tensor} has unknown dtype {_short(dtype)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise Refusal(path, f"{tensor} has a malformed shape {_short(shape)}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size):
        raise Refusal(path, f"{tensor} has data_offsets {_short(offsets)} outside the {data_size}-byte data")
    bits = DTYPE_BITS[dtype]
    for d in shape:
        bits *= d
    if bits % 8 or offsets[1] - offsets[0] != bits // 8:
        if bits.bit_length() > 128:  # str() of a huge int is slow, and refused past 4300 digits
            needs = f"over 2**{bits.bit_length() - 1} bits"
        else:
            needs = f"{bits // 8} bytes" if not bits % 8 else f"{bits} bits, not whole bytes"
        raise Refusal(path, f"{tensor} spans {offsets[1] - offsets[0]} bytes, its {dtype} shape "
                            f"{_short(shape, 40)} needs {needs}")
    return dtype, shape


# ---- where the checkpoint is -----------------------------------------------------------------

class Source:
    """A checkpoint's config, tensor names and a way to read a shard's header (None when unreachable)."""

    def __init__(self, config: dict, config_label: str, weight_map: dict[str, str], index_label: str,
                 read_header, shard_label, missing_shards: list[str] = ()):
        self.config, self.config_label, self.weight_map, self.index_label = config, config_label, weight_map, index_label
        self.read_header, self.shard_label, self.missing_shards = read_header, shard_label, list(missing_shards)


def find_local_checkpoint(model: str, env: dict) -> tuple[Path, str] | None:
    """(directory, "directory") for a local path, (snapshot, "hf-cache") for a repo id in the HF cache."""
    path = Path(model)
    if path.is_dir():
        return path, "directory"
    if model.count("/") != 1 or model.startswith(("/", ".")):
        return None
    if "HF_HOME" in env:
        hf_home = Path(env["HF_HOME"])
    else:
        home = env.get("HOME") or os.path.expanduser("~")
        hf_home = Path(env.get("XDG_CACHE_HOME", Path(home) / ".cache")) / "huggingface"
    repo = Path(env.get("HF_HUB_CACHE", hf_home / "hub")) / ("models--" + model.replace("/", "--"))
    revision = env.get("MODEL_REVISION") or "main"
    ref = repo / "refs" / revision
    try:
        snapshot = repo / "snapshots" / ref.read_text().strip() if ref.is_file() else None
    except (OSError, ValueError):
        return None
    if snapshot is None and re.fullmatch(r"[0-9a-f]{40}", revision):
        snapshot = repo / "snapshots" / revision  # a commit pin: the Hub cache keeps no ref for it, only the snapshot
    return (snapshot, "hf-cache") if snapshot is not None and snapshot.is_dir() else None


def local_source(directory: Path, kind: str) -> Source | None:
    config_path, index_path = directory / "config.json", directory / INDEX_NAME
    config = read_json_object(config_path) if config_path.is_file() else {}
    headers: dict[str, dict] = {}

    def read_header(shard: str):
        if shard not in headers:
            headers[shard] = read_safetensors_header(directory / shard)
        return headers[shard]

    def shard_label(shard: str) -> str:
        return str(directory / shard)

    if index_path.is_file():
        weight_map = read_index(index_path)
        missing = sorted(s for s in set(weight_map.values()) if not (directory / s).is_file())
        if missing and kind == "directory":
            raise Refusal(index_path, f"names {len(missing)} shard(s) missing from {directory}: "
                                      f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        return Source(config, str(config_path), weight_map, str(index_path), read_header, shard_label, missing)
    shards = sorted(p.name for p in directory.glob("*.safetensors"))
    if not shards:
        return None
    weight_map = {name: shard for shard in shards for name in read_header(shard)}
    label = str(directory / shards[0]) if len(shards) == 1 else str(directory)
    return Source(config, str(config_path), weight_map, label, read_header, shard_label)


def _is(exc: Exception, name: str) -> bool:
    return any(c.__name__ == name for c in type(exc).__mro__)


def hub_source(model: str, env: dict, hub=None) -> Source | str:
    """Config, index and (by HTTP range reads) shard headers from the Hub; a reason string when unreachable."""
    if env.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return "checkpoint not local and HF_HUB_OFFLINE is set"
    if hub is None:
        try:
            import huggingface_hub as hub
        except ImportError:
            return "checkpoint not local and huggingface_hub is not installed"
    revision = env.get("MODEL_REVISION") or None
    try:
        config_path = Path(hub.hf_hub_download(model, "config.json", revision=revision))
        try:
            index_path = Path(hub.hf_hub_download(model, INDEX_NAME, revision=revision))
        except Exception as exc:  # the repo has no index (a single model.safetensors), or the fetch failed
            if not _is(exc, "EntryNotFoundError") or _is(exc, "LocalEntryNotFoundError"):
                raise
            index_path = None
    except Exception as exc:  # network, auth, missing repo or file: cannot decide, so do not refuse
        return f"checkpoint not local and its files could not be fetched from the Hub ({type(exc).__name__})"

    def read_header(shard: str):
        try:
            meta = hub.parse_safetensors_file_metadata(model, shard, revision=revision)
        except Exception as exc:
            if _is(exc, "SafetensorsParsingError"):
                raise Refusal(f"{model}:{shard}", f"unreadable safetensors header ({exc})") from None
            return None
        return {name: (info.dtype, list(info.shape)) for name, info in meta.tensors.items()}

    config = read_json_object(config_path, f"{model}:config.json")
    if index_path is not None:
        weight_map, index_label = read_index(index_path, f"{model}:{INDEX_NAME}"), f"{model}:{INDEX_NAME}"
    else:
        header = read_header("model.safetensors")
        if header is None:
            return "checkpoint not local, it has no index and its model.safetensors header was not reachable"
        weight_map, index_label = dict.fromkeys(header, "model.safetensors"), f"{model}:model.safetensors"
    return Source(config, f"{model}:config.json", weight_map, index_label, read_header, lambda s: f"{model}:{s}")


# ---- the checks -----------------------------------------------------------------------------

def _pattern(template: str) -> re.Pattern:
    """A regex for a name template: {i}, {n} or {k} become the number group, the rest of the name follows."""
    number = r"(?P<num>\d{1,9})"  # a longer run of digits is no layer number (and int() of it is costly)
    return re.compile(re.escape(template).replace(r"\{i\}", number).replace(r"\{n\}", number)
                      .replace(r"\{k\}", number) + "(?P<rest>.+)$")


def _positive_int(source: Source, key: str, allow_zero: bool = False) -> int | None:
    value = source.config.get(key)
    if value is None:
        return None
    if type(value) is not int or value < (0 if allow_zero else 1):
        raise Refusal(source.config_label, f"{key} is {value!r}, not a {'non-negative' if allow_zero else 'positive'} integer")
    return value


def _layouts(profile: Profile) -> list[str]:
    return [profile["layout"]] if profile["layout"] else ["mtp.", "model.layers.{n}."]


def mtp_stages(names, profile: Profile, layers: int | None) -> dict[int, list[tuple[str, str]]]:
    """MTP stage -> (tensor name, the rest of it after the stage prefix)."""
    stages: dict[int, list[tuple[str, str]]] = {}
    for layout in _layouts(profile):
        if "{n}" in layout and layers is None:
            continue
        pattern = _pattern(layout)
        for name in names:
            m = pattern.match(name)
            if m:
                num = m.groupdict().get("num")
                stage = int(num) - (layers if "{n}" in layout else 0) if num else 0
                if stage >= 0:
                    stages.setdefault(stage, []).append((name, m["rest"]))
    return stages


def _stage_prefix(profile: Profile, stage: int, layers: int | None) -> str:
    return profile["layout"].format(i=stage, n=(layers or 0) + stage)


def _drafter_hint(profile: Profile, config: dict, families: set[str]) -> str:
    for name, marks in profile["drafters"].items():
        keys = sorted(k for k in config if k.startswith(marks["config_prefix"]))
        hits = sorted(families & set(marks["families"]))
        if keys or hits:
            shown = ", ".join(hits + keys[:3])
            return f"; this is a {name} drafter ({shown}), not an MTP block: {marks['note']}"
    return ""


def check_mtp(model: str, env: dict, profile: str | None = None, hub=None) -> str:
    """Raise Refusal when the checkpoint cannot serve MTP as its profile expects; else say what was found."""
    found = find_local_checkpoint(model, env)
    source = local_source(*found) if found else None
    if source is None and found and found[1] == "directory":
        return f"not checked (no safetensors files in {found[0]})"
    if source is None:
        source = hub_source(model, env, hub)
        if isinstance(source, str):
            return f"not checked ({source})"
    chosen = profile_for(model, source.config, profile)
    layers = _positive_int(source, "num_hidden_layers")
    nextn = None
    if chosen["nextn_key"]:
        nextn = _positive_int(source, chosen["nextn_key"], allow_zero=True)
        if not nextn:
            raise Refusal(source.config_label, f"{chosen['nextn_key']} is {nextn if nextn is not None else 'absent'}: "
                          "the checkpoint declares no MTP layer (vLLM's method=mtp fails on it with ZeroDivisionError)")
        if layers is None and "{n}" in (chosen["layout"] or ""):
            raise Refusal(source.config_label, "num_hidden_layers is absent, so the MTP layers cannot be located")
    names = list(source.weight_map)
    stages = mtp_stages(names, chosen, layers)
    if not stages:
        known = str(layers) if layers is not None else "{num_hidden_layers}"
        where = " or ".join(t.replace("{i}.", "").replace("{n}", known) + "*" for t in _layouts(chosen))
        raise Refusal(source.index_label, f"holds no MTP tensors ({where} absent among {len(names)} tensors): "
                                          "no MTP block, as when an export strips it")
    summary = [f"profile {chosen.key}"]
    if chosen["layout"]:
        _check_structure(source, chosen, stages, layers, nextn, names)
    mtp_names = [name for stage in sorted(stages) for name, _ in stages[stage]]
    summary.append(_check_shards(source, chosen, mtp_names))
    return ", ".join([f"{len(mtp_names)} MTP tensors found in {len(stages)} stage(s)", *summary])


def _check_structure(source: Source, profile: Profile, stages: dict, layers: int | None, nextn: int | None,
                     names: list[str]) -> None:
    seen = {rest.split(".", 1)[0] for pairs in stages.values() for _, rest in pairs}
    hint = _drafter_hint(profile, source.config, seen)
    foreign = sorted(f for f in seen if not any(fnmatch.fnmatchcase(f, p) for p in profile["families"]))
    if foreign:
        shown = ", ".join(f + ".*" for f in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise Refusal(source.index_label, f"MTP stages hold tensor families a {profile.key} MTP block does not "
                                          f"have ({shown}){hint}")
    for stage in sorted(stages):
        missing = [m for m in profile["required"] if not any(r.startswith(m + ".") for _, r in stages[stage])]
        if missing:
            prefix = _stage_prefix(profile, stage, layers)
            raise Refusal(source.index_label, f"{prefix}* lacks {', '.join(missing)}: not a complete {profile.key} "
                                              f"MTP block{hint}")
    if nextn is not None and not _is_range(set(stages), nextn):
        shown = ", ".join(_stage_prefix(profile, s, layers) + "*" for s in sorted(stages))
        raise Refusal(source.index_label, f"holds MTP stages {shown} but config.json {profile['nextn_key']}={nextn} "
                                          f"expects stages 0..{nextn - 1}")
    if layers is not None:
        main = set()
        for template in profile["main_layers"]:
            pattern = _pattern(template)
            main |= {int(m.group(1)) for m in map(pattern.match, names) if m}
        main = {k for k in main if "{n}" not in profile["layout"] or k < layers}
        if main and not _is_range(main, layers):
            raise Refusal(source.index_label, f"holds main layers {_ranges(main)} but config.json "
                                              f"num_hidden_layers={layers} expects 0-{layers - 1}")


def _is_range(numbers: set[int], count: int) -> bool:
    """numbers == {0, ..., count - 1}, without building that set from a count read off a config."""
    return len(numbers) == count and min(numbers) == 0 and max(numbers) == count - 1


def _ranges(numbers: set[int]) -> str:
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def _check_shards(source: Source, profile: Profile, mtp_names: list[str]) -> str:
    """Quantization suffixes by name (when the profile wants unquantized MTP), then the headers of the
    shards that hold MTP tensors: readable, holding what the index places there, with the wanted dtypes."""
    wanted = "/".join(profile["weight_dtypes"] or [])
    quantized = [n for n in mtp_names if is_quantization_tensor(n)] if wanted else []
    if quantized:
        raise Refusal(source.index_label, f"MTP block is quantized ({len(quantized)} tensor(s) with quantization "
                                          f"suffixes, e.g. {quantized[0]}) but {profile.key} expects {wanted}")
    by_shard: dict[str, list[str]] = {}
    for name in mtp_names:
        by_shard.setdefault(source.weight_map[name], []).append(name)
    unread = [s for s in by_shard if s in source.missing_shards]
    read = 0
    for shard in sorted(set(by_shard) - set(unread)):
        header = source.read_header(shard)
        if header is None:
            unread.append(shard)
            continue
        read += 1
        for name in by_shard[shard]:
            if name not in header:
                raise Refusal(source.shard_label(shard), f"lacks {name}, which {source.index_label} places in it")
            dtype = header[name][0]
            # float tensors must be one of the wanted dtypes; an integer `.weight` is a packed one
            if wanted and ((dtype in FLOAT_DTYPES and dtype not in profile["weight_dtypes"])
                           or (dtype not in FLOAT_DTYPES and name.endswith(".weight"))):
                raise Refusal(source.shard_label(shard), f"MTP tensor {name} is {dtype} but {profile.key} "
                                                         f"expects {wanted} (a quantized MTP block)")
    if not read:
        return f"headers not checked: {len(unread)} shard(s) holding MTP tensors not readable here"
    done = f"all {wanted} in {read} shard header(s) read" if wanted else \
        f"{read} shard header(s) read, dtypes not fixed by the profile"
    if unread:
        done += f"; {len(unread)} shard(s) holding MTP tensors not readable here, not checked"
    return done
