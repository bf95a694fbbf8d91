"""vLLM's parser and engine config for the entrypoint's commands, run by worker/prove_worker.py inside
prove's venv; this side builds the commands with the image's own entrypoint code and judges the
results. Our own checks (not vLLM's) are named `ours.*`."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import known_issues
from ..in_image import entrypoint
from .env import Env
from .report import Report, StepFailed
from .settings import FIXTURE_MODEL, FIXTURE_MODELS, Device, ProveTarget

WORKER = Path(__file__).resolve().parent / "worker" / "prove_worker.py"
MAIN_LAYERS = {  # vLLM's module names in the NVIDIA DeepSeek-V4 model (vllm/models/deepseek_v4/)
    "attention.fused_wqa_wkv": "model.layers.2.attn.fused_wqa_wkv",
    "attention.wq_b": "model.layers.2.attn.wq_b",
    "attention.wo_a": "model.layers.2.attn.wo_a",
    "attention.wo_b": "model.layers.2.attn.wo_b",
    "experts.gate_proj": "model.layers.2.ffn.experts.0.gate_proj",
    "experts.down_proj": "model.layers.2.ffn.experts.0.down_proj",
    "compressor": "model.layers.2.attn.compressor.fused_wkv_wgate",
    "indexer": "model.layers.2.attn.indexer.wq_b",
    "shared_experts": "model.layers.2.ffn.shared_experts.gate_up_proj",
    "router_gate": "model.layers.2.ffn.gate",
    "lm_head": "lm_head",
}
MTP_LAYERS = {  # the NVIDIA DeepSeekV4MTP draft names its layer model.layers.<num_hidden_layers>
    "e_proj": "model.layers.43.e_proj", "attention.wq_b": "model.layers.43.attn.wq_b",
    "experts.gate_proj": "model.layers.43.ffn.experts.0.gate_proj",
}
EXPECTED_SCHEMES = {  # what the checkpoint's layers must get (README: FP8 attention, NVFP4 experts, the rest BF16)
    "attention": ("CompressedTensorsW8A8Fp8", "FP8 W8A8, 128x128 weight blocks, dynamic activations"),
    "experts": ("CompressedTensorsW4A4Fp4", "NVFP4 W4A4"),
}


@dataclass
class Case:
    id: str
    env: dict = field(default_factory=dict)
    args: list = field(default_factory=list)
    expect: str = "accept"  # accept | reject (by vLLM) | ours (accepted by vLLM, refused by our checks)
    check: dict = field(default_factory=dict)  # config field -> value vLLM must resolve
    fixture: Path | None = None  # the constructed config a known model id (serve.models) is pointed at


def cases(pt: ProveTarget, user_env: dict | None = None, user_args: list | None = None) -> list[Case]:
    """The default command, each documented override (README "Run"), settings vLLM must refuse,
    settings only our checks refuse, and the user's own settings when given."""
    serve = json.loads(pt.serve_defaults.read_text())["serve"]
    k, tp, kmax = serve["num_speculative_tokens"], serve["tensor_parallel_size"], pt.max_speculative_tokens
    other_tp = pt.gpus if pt.gpus != tp else 1
    out = [Case("default", check={"tensor_parallel_size": tp, "num_speculative_tokens": k,
                                  "max_model_len": serve["max_model_len"], "kv_cache_dtype": serve["kv_cache_dtype"]}),
           Case(f"TENSOR_PARALLEL_SIZE={other_tp}", {"TENSOR_PARALLEL_SIZE": str(other_tp)},
                check={"tensor_parallel_size": other_tp}),
           Case("NUM_SPECULATIVE_TOKENS=0", {"NUM_SPECULATIVE_TOKENS": "0"},
                check={"num_speculative_tokens": 0, "speculative_method": None})]
    out += [Case(f"NUM_SPECULATIVE_TOKENS={n}", {"NUM_SPECULATIVE_TOKENS": str(n)},
                 check={"num_speculative_tokens": n, "speculative_method": "mtp"}) for n in range(1, kmax + 1) if n != k]
    out += [Case(f"MAX_MODEL_LEN={2 * serve['max_model_len']}", {"MAX_MODEL_LEN": str(2 * serve["max_model_len"])},
                 check={"max_model_len": 2 * serve["max_model_len"]}),
            Case("KV_CACHE_DTYPE=fp8_e4m3", {"KV_CACHE_DTYPE": "fp8_e4m3"}, check={"kv_cache_dtype": "fp8_e4m3"}),
            Case("MAX_NUM_SEQS=16", {"MAX_NUM_SEQS": "16"}, check={"max_num_seqs": 16}),
            Case("MAX_NUM_BATCHED_TOKENS=8192", {"MAX_NUM_BATCHED_TOKENS": "8192"}, check={"max_num_batched_tokens": 8192}),
            Case("PORT=9000 HOST=127.0.0.1 SERVED_MODEL_NAME=dsv4", {"PORT": "9000", "HOST": "127.0.0.1",
                                                                     "SERVED_MODEL_NAME": "dsv4"},
                 check={"served_model_name": "dsv4"}),
            Case("VLLM_EXTRA_ARGS + trailing arguments", {"VLLM_EXTRA_ARGS": "--max-num-seqs 4"},
                 ["--gpu-memory-utilization", "0.85"], check={"max_num_seqs": 4, "gpu_memory_utilization": 0.85}),
            # settings vLLM itself must refuse, each with its own reason
            Case("MAX_NUM_SEQS=4096 MAX_NUM_BATCHED_TOKENS=1024", {"MAX_NUM_SEQS": "4096", "MAX_NUM_BATCHED_TOKENS": "1024"},
                 expect="reject"),
            Case("unknown flag --no-such-flag", args=["--no-such-flag"], expect="reject"),
            Case("MAX_MODEL_LEN=2097152", {"MAX_MODEL_LEN": "2097152"}, expect="reject"),
            Case("KV_CACHE_DTYPE=fp9", {"KV_CACHE_DTYPE": "fp9"}, expect="reject"),
            Case(f"TENSOR_PARALLEL_SIZE={2 * pt.gpus}", {"TENSOR_PARALLEL_SIZE": str(2 * pt.gpus)}, expect="reject"),
            # settings vLLM 0.33 accepts but this target cannot serve: our checks refuse them
            Case(f"NUM_SPECULATIVE_TOKENS={kmax + 1}", {"NUM_SPECULATIVE_TOKENS": str(kmax + 1)}, expect="ours"),
            Case("--cudagraph-capture-sizes 3 5", args=["--cudagraph-capture-sizes", "3", "5"], expect="ours")]
    # each other checkpoint the target serves when MODEL names it: its own serve defaults, on its constructed config
    for model_id, entry in serve.get("models", {}).items():
        backend = [a for i, a in enumerate(entry.get("extra_args", [])[1:]) if entry["extra_args"][i] == "--moe-backend"]
        out.append(Case(f"MODEL={model_id}", {"MODEL": model_id}, check={"moe_backend": backend[-1]} if backend else {},
                        fixture=FIXTURE_MODELS[model_id]))
    if user_env or user_args:
        out.append(Case("your settings", dict(user_env or {}), list(user_args or [])))
    return out


def ours(config: dict, argv: list[str], pt: ProveTarget) -> list[str]:
    """Our checks (vLLM does not make them): k within the target's limit; capture sizes the command
    sets are multiples of k+1 (each decode step runs k+1 tokens per sequence)."""
    problems, k = [], config["num_speculative_tokens"] or 0
    if k > pt.max_speculative_tokens:
        problems.append(f"ours: k={k} exceeds {pt.name}'s limit of {pt.max_speculative_tokens} MTP tokens")
    if k and "--cudagraph-capture-sizes" in argv:
        odd = [s for s in config["cudagraph_capture_sizes"] if s % (k + 1)]
        if odd:
            problems.append(f"ours: capture sizes {odd} are not multiples of k+1={k + 1}")
    return problems


def argv_for(pt: ProveTarget, case: Case, model: Path, locate=lambda path: path) -> list[str]:
    """The entrypoint's command for the case; a known model id (serve.models) keeps its own serve defaults and
    is then pointed at its constructed config (the checkpoint itself cannot be downloaded here). `locate` maps a
    host path to where the worker sees it (prove --image mounts the fixtures elsewhere)."""
    defaults = json.loads(pt.serve_defaults.read_text())
    argv = entrypoint.build_command(entrypoint.effective_settings(defaults, {"MODEL": str(model), **case.env}), case.args)
    if case.fixture:
        argv[2] = str(locate(case.fixture))
    return argv


def run_worker(env: Env, pt: ProveTarget, device: Device, request: dict, log: Path) -> dict:
    stated = {"capability": device.capability, "name": device.name, "memory_mib": device.memory_mib,
              "count": pt.gpus, "nvlink": pt.nvlink}
    # Beside the log, in prove's work directory: a worker in a container of the image (prove --image, an
    # arbitrary UID) sees it mounted at the same path and writes its result there.
    with tempfile.TemporaryDirectory(prefix="dsv4-prove-", dir=log.parent) as tmp:
        os.chmod(tmp, 0o1777)
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        run_env = {**env.run_env(), "DSV4_PROVE_PLATFORM": json.dumps(stated)}
        with open(log, "w") as out:
            proc = subprocess.run([str(env.python), str(WORKER), str(req), str(res)], env=run_env,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=1800)
        if not res.is_file():
            tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
            raise StepFailed(f"the worker (exit {proc.returncode}) produced no result: {tail[0][:300]}")
        return json.loads(res.read_text())


def judge_case(report: Report, case: Case, outcome: dict, argv: list[str], pt: ProveTarget, suffix: str = "") -> None:
    name = f"engine.{case.id}{suffix}" if case.expect == "accept" else \
        (f"engine.reject.{case.id}" if case.expect == "reject" else f"ours.reject.{case.id}")
    if not outcome["ok"]:
        reason = f"vLLM ({outcome['stage']}, {outcome['raised_at']}): {outcome['error']}"
        report.add(name, case.expect == "reject", reason if case.expect == "reject" else f"refused by {reason}")
        return
    config, problems = outcome["config"], ours(outcome["config"], argv, pt)
    wrong = [f"{key}={config.get(key)!r} (asked {want!r})" for key, want in case.check.items() if config.get(key) != want]
    if case.expect == "reject":
        report.add(name, False, "vLLM accepted a setting it must refuse")
    elif case.expect == "ours":
        report.add(name, bool(problems), "; ".join(problems) if problems else "neither vLLM nor our checks refused it")
    else:
        report.add(name, not wrong and not problems, "; ".join(wrong + problems) or describe(config))


def describe(c: dict) -> str:
    spec = f"{c['speculative_method']} k={c['num_speculative_tokens']}" if c["speculative_method"] else "no speculation"
    return (f"{spec}, kv {c['kv_cache_dtype']}, max-model-len {c['max_model_len']}, TP {c['tensor_parallel_size']}, "
            f"capture sizes {c['cudagraph_capture_sizes'][:8]}{'...' if len(c['cudagraph_capture_sizes']) > 8 else ''} "
            f"({c['cudagraph_mode']}), moe-backend {c['moe_backend']}, indexer kv {c['indexer_kv_dtype']}, "
            f"block {c['block_size']}, max-num-seqs {c['max_num_seqs']}")


def judge_schemes(report: Report, schemes: dict, suffix: str = "") -> None:
    if "error" in schemes:
        report.add(f"schemes{suffix}", False, f"vLLM's compressed-tensors config raised {schemes['error']}")
        return
    for kind, got in schemes["checkpoint"].items():
        group = kind.split(".")[0]
        want, label = EXPECTED_SCHEMES.get(group, (None, "unquantized (BF16)"))
        ok = got.get("scheme") == want and (group != "attention" or (got.get("weight_block_size") == [128, 128]
                                                                     and got.get("is_static_input_scheme") is False))
        report.add(f"schemes.{kind}{suffix}", ok, f"{got['layer']} -> {got.get('scheme') or 'unquantized'}"
                   + (f" {got.get('weight_block_size')}" if got.get("weight_block_size") else "") + f" (want {label})")
    pristine = schemes["weight_only_fp8"]["pristine"]["attention"].get("is_static_input_scheme")
    patched = schemes["weight_only_fp8"]["patched"]["attention"].get("is_static_input_scheme")
    report.add(f"schemes.patch-0001{suffix}", pristine is None and patched is False,
               f"weight-only FP8 group ({schemes['weight_only_fp8']['patched']['attention'].get('scheme')}): "
               f"is_static_input_scheme {pristine!r} unpatched -> {patched!r} patched")
    mtp = schemes["mtp"]
    quantized = {k: v["scheme"] for k, v in mtp["layers"].items() if v.get("scheme")}
    report.add(f"schemes.mtp-block{suffix}", mtp["unquantized"] and not quantized,
               "draft built unquantized (BF16 MTP block), decided by patch 0002 from the checkpoint's index" if mtp["unquantized"]
               else f"draft inherits the main quant config: {quantized} ({mtp['how']})")


def run(report: Report, env: Env, pt: ProveTarget, case_list: list[Case], log_dir: Path,
        model: Path = FIXTURE_MODEL, patched_source: Path | None = None, table=None, locate=lambda path: path) -> dict:
    """Every case on the first stated device; the default (and the user's settings) again on every other device
    of the target. `table`: known_issues.toml's rows (default: the committed file). `locate`: where the worker
    sees a host path (prove --image mounts the fixtures elsewhere)."""
    argv = {case.id: argv_for_or_refusal(report, pt, case, locate(model), locate) for case in case_list}
    runnable = [c for c in case_list if argv[c.id] is not None]
    compressed_tensors = "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py"
    request = {"model": str(locate(model)), "details_for": "default", "layers": MAIN_LAYERS,
               "weight_only_layer": MAIN_LAYERS["attention.fused_wqa_wkv"],
               "mtp_layers": MTP_LAYERS, "pristine_compressed_tensors": str(env.pristine / compressed_tensors),
               "patched_compressed_tensors": str(patched_source) if patched_source else None,
               "picks_for": list(PICKS_FOR)}
    # every case on the first device; the default and the user's own settings on the others too
    chosen = {device.capability: runnable if i == 0 else [c for c in runnable if c.id in PICKS_FOR]
              for i, device in enumerate(pt.devices)}

    def work(device: Device) -> dict:
        req = {**request, "cases": [{"id": c.id, "argv": argv[c.id]} for c in chosen[device.capability]]}
        return run_worker(env, pt, device, req, log_dir / f"worker-{pt.name}-{device.capability}.log")

    with ThreadPoolExecutor(max_workers=len(pt.devices)) as pool:  # one vLLM process per stated device, at once
        futures = [pool.submit(work, device) for device in pt.devices]
    results = {}
    for i, (device, future) in enumerate(zip(pt.devices, futures)):
        result = results[device.capability] = future.result()
        report.add(f"engine.platform@{device.capability}", result.get("capability") == device.capability,
                   f"vLLM's current_platform is {result['platform']} with capability {result.get('capability')} "
                   f"({device.name}, {device.memory_mib} MiB, {pt.gpus} GPUs, NVLink {pt.nvlink})")
        suffix = f"@{device.capability}" if i else ""
        for case in chosen[device.capability]:
            judge_case(report, case, result["cases"][case.id], argv[case.id], pt, suffix)
        if "schemes" in result:
            judge_schemes(report, result["schemes"], suffix)
        if "backends" in result:
            judge_backends(report, result["backends"], device.capability)
        for case_id, picked in result.get("picks", {}).items():
            judge_known(report, table or known_issues.load(), pt.name, device.capability, picked,
                        "" if case_id == "default" else f" ({case_id})")
    report.facts["engine"] = results
    return results


PICKS_FOR = ("default", "your settings")  # the cases whose known-issue picks prove reports and judges


def judge_known(report: Report, table, target: str, capability: str, picked: dict, label: str = "") -> None:
    """One INFO line with what vLLM's selectors picked on this capability, then one PASS/FAIL line per row of
    known_issues.toml that prove checks here: FAIL when the reported value is one the table marks broken."""
    if "error" in picked:
        report.add(f"known@{capability}{label}", False, f"vLLM's selectors raised {picked['error']}")
        return
    report.add(f"picks@{capability}{label}", None,
               f"NVFP4 routed experts {picked['nvfp4_moe_backend']}, BF16 MTP experts {picked['mtp_moe_backend']}, "
               f"draft sampling {picked['draft_sample_method']}, rejection sampling {picked['rejection_sample_method']}, "
               f"CUDA graphs target {picked['cudagraph_mode']} / draft {picked['draft_cudagraph_mode']}, "
               f"tool strict level {picked['tool_strict_level']}, FlashInfer autotune {picked['flashinfer_autotune']}")
    for issue in known_issues.judged(table, target, capability):
        value, rule = picked.get(issue.prove.report), issue.prove
        refused = str(value).startswith("error:")  # vLLM's selector raised: the server would not start like this
        hit = refused or rule.hit(value)
        said = f"broken: {'/'.join(rule.broken)}" if rule.broken else f"allowed: {'/'.join(rule.allowed)}"
        report.add(f"known.{issue.id}@{capability}{label}", not hit,
                   f"{issue.prove.report} = {value} ({said}; {', '.join(issue.reports[:2])})"
                   + ("; vLLM refuses this setting at model load" if refused else
                      f"; the table's answer ({issue.answer}) is not in effect" if hit else ""))


def judge_backends(report: Report, backends: dict, capability: str) -> None:
    if "error" in backends:
        report.add(f"backends@{capability}", False, f"vLLM's selectors raised {backends['error']}")
        return
    report.add(f"backends.attention@{capability}", True, f"vLLM's _select_dsv4_attn_cls: {backends['attention']}")
    support = ", ".join(f"{k} {'yes' if v is True else 'no' if v is False else v}"
                        for k, v in backends["nvfp4_moe_device_support"].items())
    first = backends["nvfp4_moe_first_supported"]
    report.add(f"backends.nvfp4-moe@{capability}", first is not None,
               f"first in vLLM's order whose kernel supports the device: {first} (device support: {support}; "
               "the oracle's shape checks run on the GPU)")


def argv_for_or_refusal(report: Report, pt: ProveTarget, case: Case, model: Path,
                        locate=lambda path: path) -> list[str] | None:
    """The entrypoint's command, or None after reporting the entrypoint's own refusal."""
    try:
        return argv_for(pt, case, model, locate)
    except entrypoint.EntrypointError as exc:
        report.add(f"engine.{case.id}", False, f"the entrypoint refuses it (exit {exc.exit_code}): {exc}")
        return None


def entrypoint_refuses(report: Report, pt: ProveTarget) -> None:
    """A malformed override never reaches vLLM: the entrypoint stops it with one line and exit 2."""
    case = Case("TENSOR_PARALLEL_SIZE=abc", {"TENSOR_PARALLEL_SIZE": "abc"})
    try:
        argv_for(pt, case, FIXTURE_MODEL)
    except entrypoint.EntrypointError as exc:
        report.add(f"entrypoint.reject.{case.id}", exc.exit_code == 2, f"exit {exc.exit_code}: {exc}")
    else:
        report.add(f"entrypoint.reject.{case.id}", False, "the entrypoint accepted a malformed override")
