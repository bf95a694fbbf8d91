"""Load and validate matrix.toml, the single source of truth for every image target.

A target may `extends` another: tables merge key by key, any other value replaces the parent's.
Validation runs on the merged target and names the offending key, e.g.
`matrix.toml: targets.sm120.serve.tensor_parallel_size: expected an integer >= 1, got 'x'`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import REPO_ROOT
from .errors import UserError

MATRIX_PATH = REPO_ROOT / "matrix.toml"
DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
OWNER = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


# --- a small schema language: each key maps to (required, check) -------------------------------

def _is_str(v): return isinstance(v, str) and v != ""
def _is_bool(v): return isinstance(v, bool)
def _is_int(minimum=0): return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum
def _is_num(v): return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
def _is_str_list(v): return isinstance(v, list) and all(isinstance(x, str) for x in v)
def _is_int_list(v): return isinstance(v, list) and v and all(_is_int(1)(x) for x in v)
def _one_of(*options): return lambda v: v in options
def _matches(rx): return lambda v: isinstance(v, str) and bool(rx.match(v))
def _str_map(v): return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
def _num_map(v): return isinstance(v, dict) and all(_is_num(x) for x in v.values())

EXPECT = {  # what a failing check says it expected
    _is_str: "a non-empty string", _is_bool: "true or false", _is_num: "a number >= 0",
    _is_str_list: "a list of strings", _is_int_list: "a non-empty list of integers >= 1",
    _str_map: "a table of strings", _num_map: "a table of numbers",
}

Spec = dict[str, tuple[bool, Callable[[Any], bool], str]]


def _spec(**keys: tuple) -> Spec:
    out = {}
    for key, (required, check, *expect) in keys.items():
        out[key.replace("__", "-")] = (required, check, expect[0] if expect else EXPECT.get(check, "a valid value"))
    return out


PROJECT = _spec(name=(True, _is_str), image=(True, _is_str), default_owner=(True, _matches(OWNER), "a lowercase name"),
                source=(True, _is_str), description=(True, _is_str), licenses=(True, _is_str))
BASE = _spec(build=(True, _matches(DIGEST_REF), "an image reference pinned by @sha256 digest"),
             runtime=(True, _matches(DIGEST_REF), "an image reference pinned by @sha256 digest"),
             bootstrap=(False, lambda v: isinstance(v, dict), "a table"))
BOOTSTRAP = _spec(suite=(True, _is_str), mirror=(True, _is_str), variant=(True, _one_of("minbase", "essential", "apt"),
                  "minbase, essential or apt"), include=(True, _is_str_list))
TOOLCHAIN = _spec(cuda=(False, _is_str), python=(True, _matches(re.compile(r"^3\.\d+$")), "a Python version like 3.12"),
                  wheel_platform=(True, _matches(re.compile(r"^manylinux_2_\d+_x86_64$")), "manylinux_2_NN_x86_64"),
                  torch=(True, _is_str), torch_cuda_arch_list=(False, _is_str), flashinfer=(False, _is_str),
                  flashinfer_cuda_arch_list=(False, _is_str), build_packages=(True, _is_str_list),
                  runtime_packages=(True, _is_str_list), keep_nvcc=(True, _is_bool))
VLLM = _spec(source=(True, _one_of("sdist", "wheel"), "sdist or wheel"), package=(False, _is_str),
             version=(True, _is_str), dist_alias=(False, _is_str), sdist_url=(False, _is_str), sdist_sha256=(False, _matches(SHA256), "64 hex digits"),
             requirements=(True, _is_str_list), build_requirements=(False, _is_str_list),
             overrides=(False, _is_str_list), max_jobs=(False, _is_int(1), "an integer >= 1"),
             nvcc_threads=(False, _is_int(1), "an integer >= 1"))
PATCH = _spec(file=(True, _is_str), sha256=(True, _matches(SHA256), "64 hex digits"))
TINY_MODEL = _spec(path=(True, _is_str), seed=(True, _is_int(0), "an integer >= 0"), mtp_noise=(True, _is_num))
SERVE = _spec(model=(True, _is_str), served_model_name=(False, _is_str),
              tensor_parallel_size=(True, _is_int(1), "an integer >= 1"),
              num_speculative_tokens=(True, _is_int(0), "an integer >= 0"),
              max_model_len=(True, _is_int(1), "an integer >= 1"), port=(True, _is_int(1), "an integer >= 1"),
              kv_cache_dtype=(False, _is_str), block_size=(False, _is_int(1), "an integer >= 1"),
              tokenizer_mode=(False, _is_str), reasoning_parser=(False, _is_str), tool_call_parser=(False, _is_str),
              enable_auto_tool_choice=(False, _is_bool), trust_remote_code=(False, _is_bool),
              disable_custom_all_reduce=(False, _is_bool), max_num_seqs=(False, _is_int(1), "an integer >= 1"),
              max_num_batched_tokens=(False, _is_int(1), "an integer >= 1"), cudagraph_batch_sizes=(False, _is_int_list),
              dtype=(False, _is_str), extra_args=(True, _is_str_list), env=(False, _str_map))
THRESHOLDS = _spec(min_acceptance=(True, _num_map), reference_acceptance=(True, _num_map),
                   reference_output_tokens_per_s_c1=(True, _is_num), max_corrupted=(True, _is_int(0), "an integer >= 0"),
                   max_error_rate=(True, _is_num))
TARGET = _spec(extends=(False, _is_str), description=(True, _is_str), aliases=(True, _is_str_list),
               tags=(True, _is_str_list), platform=(True, _one_of("linux/amd64"), "linux/amd64"),
               kind=(True, _one_of("cuda", "cpu"), "cuda or cpu"), compute_capabilities=(True, _is_str_list),
               base=(True, lambda v: isinstance(v, dict), "a table"), toolchain=(True, lambda v: isinstance(v, dict), "a table"),
               vllm=(True, lambda v: isinstance(v, dict), "a table"), patches=(False, lambda v: isinstance(v, list), "an array of tables"),
               tiny_model=(False, lambda v: isinstance(v, dict), "a table"), serve=(True, lambda v: isinstance(v, dict), "a table"),
               thresholds=(True, lambda v: isinstance(v, dict), "a table"),
               ci=(True, lambda v: isinstance(v, dict), "a table"),
               prove=(False, lambda v: isinstance(v, dict), "a table"))
CI = _spec(build_runner=(True, _is_str), verify_runner=(False, _is_str))


def _is_devices(v):
    return isinstance(v, list) and v and all(
        isinstance(d, dict) and set(d) == {"capability", "name", "memory_mib"} and _is_str(d["capability"])
        and _is_str(d["name"]) and _is_int(1)(d["memory_mib"]) for d in v)


def _is_kernel(v):
    return isinstance(v, dict) and set(v) == {"source", "archs", "sass"} and all(_is_str(x) for x in v.values())


PROVE = _spec(requirements=(True, _is_str_list), toolchain=(True, _is_str_list),
              gpus=(True, _is_int(1), "an integer >= 1"), nvlink=(True, _is_bool),
              devices=(True, _is_devices, "an array of {capability, name, memory_mib} tables"),
              max_speculative_tokens=(True, _is_int(0), "an integer >= 0"),
              kernel=(True, _is_kernel, "a table {source, archs, sass}"),
              flashinfer_prebuilt=(True, _is_str_list), flashinfer_cubins_baked=(True, _is_bool))


def _check(table: Any, spec: Spec, where: str) -> None:
    if not isinstance(table, dict):
        raise UserError(f"matrix.toml: {where}: expected a table")
    for key in table:
        if key not in spec:
            raise UserError(f"matrix.toml: {where}.{key}: unknown key (known: {', '.join(sorted(spec))})")
    for key, (required, check, expect) in spec.items():
        if key not in table:
            if required:
                raise UserError(f"matrix.toml: {where}.{key}: missing (expected {expect})")
            continue
        if not check(table[key]):
            raise UserError(f"matrix.toml: {where}.{key}: expected {expect}, got {table[key]!r}")


def _merge(parent: dict, child: dict) -> dict:
    out = copy.deepcopy(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Target:
    """One validated, fully merged target of the matrix."""

    name: str
    data: dict

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def patches(self) -> list[dict]:
        return self.data.get("patches", [])

    @property
    def is_cuda(self) -> bool:
        return self.data["kind"] == "cuda"


@dataclass(frozen=True)
class Matrix:
    project: dict
    targets: dict[str, Target]
    path: Path

    def image_name(self, owner: str | None = None) -> str:
        return self.project["image"].format(owner=self.owner(owner))

    def owner(self, owner: str | None = None) -> str:
        owner = owner or os.environ.get("DSV4_OWNER") or self.project["default_owner"]
        if not OWNER.match(owner):
            raise UserError(f"invalid owner {owner!r}: use lowercase letters, digits, '.', '_' or '-'")
        return owner

    def resolve(self, arch: str) -> Target:
        """Map --arch (a target name or one of its aliases, any case) to its target."""
        wanted = arch.strip().lower()
        for target in self.targets.values():
            if wanted == target.name or wanted in (a.lower() for a in target["aliases"]):
                return target
        valid = "; ".join(f"{t.name} ({', '.join(t['aliases'])})" for t in self.targets.values())
        raise UserError(f"unknown arch {arch!r}; valid: {valid}", exit_code=2)

    def as_json(self, kind: str | None = None, compact: bool = False) -> str:
        """What the CI workflow consumes: {"include": [one entry per target]}, optionally one kind only."""
        include = []
        for t in self.targets.values():
            if kind and t["kind"] != kind:
                continue
            include.append({
                "target": t.name, "kind": t["kind"], "platform": t["platform"], "tags": t["tags"],
                "dockerfile": f"Dockerfile.{t.name}", "vllm_version": t["vllm"]["version"],
                "build_runner": t["ci"]["build_runner"], "verify_runner": t["ci"].get("verify_runner", ""),
            })
        return json.dumps({"include": include}, sort_keys=True, **({"separators": (",", ":")} if compact else {"indent": 2}))


def _validate_target(name: str, t: dict, root: Path) -> None:
    where = f"targets.{name}"
    _check(t, TARGET, where)
    _check(t["base"], BASE, f"{where}.base")
    if "bootstrap" in t["base"]:
        _check(t["base"]["bootstrap"], BOOTSTRAP, f"{where}.base.bootstrap")
    _check(t["toolchain"], TOOLCHAIN, f"{where}.toolchain")
    _check(t["vllm"], VLLM, f"{where}.vllm")
    _check(t["serve"], SERVE, f"{where}.serve")
    _check(t["thresholds"], THRESHOLDS, f"{where}.thresholds")
    _check(t["ci"], CI, f"{where}.ci")
    if t["kind"] == "cuda" and "verify_runner" not in t["ci"]:
        raise UserError(f"matrix.toml: {where}.ci.verify_runner: missing (a cuda target is verified on a GPU runner)")
    if "tiny_model" in t:
        _check(t["tiny_model"], TINY_MODEL, f"{where}.tiny_model")
    if "prove" in t:
        _check(t["prove"], PROVE, f"{where}.prove")
    for i, patch in enumerate(t.get("patches", [])):
        _check(patch, PATCH, f"{where}.patches[{i}]")
        if not (root / patch["file"]).is_file():
            raise UserError(f"matrix.toml: {where}.patches[{i}].file: no such file {patch['file']}")
    if t["kind"] == "cuda":
        for key in ("cuda", "torch_cuda_arch_list", "flashinfer", "flashinfer_cuda_arch_list"):
            if key not in t["toolchain"]:
                raise UserError(f"matrix.toml: {where}.toolchain.{key}: missing (required for kind = cuda)")
        if not t["compute_capabilities"]:
            raise UserError(f"matrix.toml: {where}.compute_capabilities: a cuda target needs at least one")
    needed = ("sdist_url", "sdist_sha256", "build_requirements") if t["vllm"]["source"] == "sdist" else ("package", "dist_alias")
    for key in needed:
        if key not in t["vllm"]:
            raise UserError(f"matrix.toml: {where}.vllm.{key}: missing (required for source = {t['vllm']['source']})")
    if t["kind"] == "cpu" and "bootstrap" not in t["base"]:
        raise UserError(f"matrix.toml: {where}.base.bootstrap: missing (the cpu target must be buildable without a registry)")


def load(path: Path | None = None) -> Matrix:
    path = path or MATRIX_PATH
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path.name}: not valid TOML: {exc}") from None
    if raw.get("schema") != 1:
        raise UserError(f"matrix.toml: schema: expected 1, got {raw.get('schema')!r}")
    _check(raw.get("project"), PROJECT, "project")
    declared = raw.get("targets")
    if not isinstance(declared, dict) or not declared:
        raise UserError("matrix.toml: targets: expected at least one [targets.NAME] table")
    merged: dict[str, dict] = {}

    def resolve(name: str, seen: tuple = ()) -> dict:
        if name in merged:
            return merged[name]
        if name in seen:
            raise UserError(f"matrix.toml: targets.{name}.extends: cycle {' -> '.join(seen + (name,))}")
        if name not in declared:
            raise UserError(f"matrix.toml: targets.{seen[-1]}.extends: no target named {name!r}")
        own = declared[name]
        if not isinstance(own, dict):
            raise UserError(f"matrix.toml: targets.{name}: expected a table")
        parent = own.get("extends")
        data = _merge(resolve(parent, seen + (name,)), own) if isinstance(parent, str) else dict(own)
        merged[name] = data
        return data

    targets = {}
    for name in declared:
        data = resolve(name)
        _validate_target(name, data, path.parent)
        targets[name] = Target(name, data)
    seen_aliases: dict[str, str] = {}
    for t in targets.values():
        for alias in [t.name, *t["aliases"]]:
            other = seen_aliases.setdefault(alias.lower(), t.name)
            if other != t.name:
                raise UserError(f"matrix.toml: targets.{t.name}.aliases: {alias!r} is also an alias of {other}")
    return Matrix(project=raw["project"], targets=targets, path=path)
