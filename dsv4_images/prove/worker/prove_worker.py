"""prove's worker: runs inside prove's venv (standard library and vLLM only) and puts each `vllm serve`
command it is given through the path `vllm serve` takes before it starts anything: vLLM's CLI parser
with the serve subcommand, ServeSubcommand.validate, validate_api_server_args,
AsyncEngineArgs.from_cli_args and create_engine_config(). Then it asks vLLM's compressed-tensors
config which scheme each kind of layer of the checkpoint gets, with the installed (patched) module
and with the pristine file from the wheel, and, for the default and the user's settings, what vLLM's
selectors pick for the rows of known_issues.toml (picks(): MoE backends, sampling methods, CUDA graphs).

    python prove_worker.py REQUEST.json RESULT.json

The platform is stated by dsv4_prove_platform (a vLLM platform plugin) from $DSV4_PROVE_PLATFORM.
"""

import contextlib
import copy
import importlib.util
import io
import json
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def register_platform_plugin() -> None:
    """Make dsv4_prove_platform discoverable as an entry point, the way vLLM finds platform plugins."""
    dist = Path(tempfile.mkdtemp(prefix="dsv4-prove-plugin-")) / "dsv4_prove_platform-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dsv4-prove-platform\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[vllm.platform_plugins]\ndsv4_prove = dsv4_prove_platform:platform_plugin\n")
    sys.path[:0] = [str(HERE), str(dist.parent)]


def one_line(exc: BaseException) -> str:
    """The exception's own words on one line (pydantic's wrapping trimmed to the validator's message)."""
    text = " ".join(str(exc).split())
    wrapped = re.match(r"\d+ validation errors? for (\w+) (?:\w+ )?Value error, (.*?)(?: \[type=.*)?$", text)
    if wrapped:
        return f"{wrapped.group(1)}: {wrapped.group(2)}"[:400]
    return f"{type(exc).__name__}: {text}"[:400]


def parse_serve(argv: list[str]):
    """argv is the entrypoint's command: ["vllm", "serve", MODEL, ...]."""
    sys.argv[0] = argv[0]  # argparse names the program in its errors, as the `vllm` console script does
    import vllm.entrypoints.cli.serve as serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    commands = {}
    for cmd in serve.cmd_init():
        cmd.subparser_init(subparsers).set_defaults(dispatch_function=cmd.cmd)
        commands[cmd.name] = cmd
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv[1:])
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        raise ValueError(f"vLLM's argument parser: {lines[-1] if lines else 'exited'}") from None
    commands[args.subparser].validate(args)
    if getattr(args, "model_tag", None) is not None:  # what ServeSubcommand.cmd does
        args.model = args.model_tag
    return args


def summary(cfg) -> dict:
    spec, comp, sched = cfg.speculative_config, cfg.compilation_config, cfg.scheduler_config
    draft = spec.draft_model_config if spec else None
    attention = cfg.attention_config
    out = {
        "architecture": cfg.model_config.architectures,
        "quantization": cfg.model_config.quantization,
        "dtype": str(cfg.model_config.dtype).removeprefix("torch."),
        "max_model_len": cfg.model_config.max_model_len,
        "tokenizer_mode": cfg.model_config.tokenizer_mode,
        "tensor_parallel_size": cfg.parallel_config.tensor_parallel_size,
        "disable_custom_all_reduce": cfg.parallel_config.disable_custom_all_reduce,
        "kv_cache_dtype": cfg.cache_config.cache_dtype,
        "block_size": cfg.cache_config.block_size,
        "max_num_seqs": sched.max_num_seqs,
        "max_num_batched_tokens": sched.max_num_batched_tokens,
        "speculative_method": spec.method if spec else None,
        "num_speculative_tokens": spec.num_speculative_tokens if spec else 0,
        "draft_architecture": draft.architectures if draft else None,
        "cudagraph_mode": str(comp.cudagraph_mode),
        "cudagraph_capture_sizes": list(comp.cudagraph_capture_sizes or []),
        "moe_backend": getattr(cfg.kernel_config, "moe_backend", None),
        "attention_backend": str(getattr(attention, "backend", None)),
        "indexer_kv_dtype": getattr(attention, "indexer_kv_dtype", None),
        "reasoning_parser": cfg.structured_outputs_config.reasoning_parser,
        "served_model_name": cfg.model_config.served_model_name,
        "gpu_memory_utilization": cfg.cache_config.gpu_memory_utilization,
    }
    if spec and comp.cudagraph_capture_sizes:
        rounded = copy.deepcopy(comp)  # what vLLM's V1 model runner does with FULL decode graphs
        try:
            rounded.adjust_cudagraph_sizes_for_spec_decode(spec.num_speculative_tokens + 1)
            out["cudagraph_sizes_rounded_by_runner"] = list(rounded.cudagraph_capture_sizes)
        except ValueError as exc:
            out["cudagraph_sizes_rounded_by_runner"] = one_line(exc)
    return out


def run_case(argv: list[str]) -> tuple[dict, object]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.common.cli_args import validate_api_server_args
    from vllm.usage.usage_lib import UsageContext

    stage = "parse"
    started = time.monotonic()
    try:
        args = parse_serve(argv)
        stage = "validate_api_server_args"
        validate_api_server_args(args)
        stage = "AsyncEngineArgs.from_cli_args"
        engine_args = AsyncEngineArgs.from_cli_args(args)
        stage = "create_engine_config"
        cfg = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
    except (Exception, SystemExit) as exc:  # vLLM's own refusal, reported as its reason
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {"ok": False, "stage": stage, "error": one_line(exc),
                "raised_at": f"{Path(where.filename).name}:{where.lineno}",
                "seconds": round(time.monotonic() - started, 1)}, None
    config = {**summary(cfg), "tool_strict_level": getattr(args, "tool_strict_level", None)}  # an API-server flag
    return {"ok": True, "config": config, "seconds": round(time.monotonic() - started, 1)}, cfg


def load_module_from(path: str, name: str):
    """A module object executed from another copy of a vLLM source file (its imports are absolute)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layer_schemes(config_class, quant_config: dict, layers: dict) -> dict:
    import torch

    cfg = config_class.from_config(quant_config)
    out = {}
    for kind, name in layers.items():
        try:
            scheme = cfg.get_scheme(torch.nn.Linear(1, 1), name)
        except Exception as exc:  # noqa: BLE001 - reported per layer
            out[kind] = {"layer": name, "error": one_line(exc)}
            continue
        attrs = {k: getattr(scheme, k) for k in ("is_static_input_scheme", "weight_block_size", "use_a16")
                 if scheme is not None and hasattr(scheme, k)}
        out[kind] = {"layer": name, "scheme": type(scheme).__name__ if scheme else None,
                     **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in attrs.items()}}
    return out


def schemes(request: dict, vllm_config) -> dict:
    """Per-layer schemes for the checkpoint's quantization_config, the MTP block's decision (patch 0002),
    and a weight-only FP8 group, patched and pristine (patch 0001)."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.quantization.compressed_tensors import compressed_tensors as installed

    quant = json.loads((Path(request["model"]) / "config.json").read_text())["quantization_config"]
    weight_only = copy.deepcopy(quant)
    weight_only["config_groups"]["group_0"]["input_activations"] = None
    variants = {"patched": installed.CompressedTensorsConfig}
    if request.get("patched_compressed_tensors"):
        variants["patched"] = load_module_from(request["patched_compressed_tensors"],
                                               "dsv4_prove_patched_compressed_tensors").CompressedTensorsConfig
    variants["pristine"] = load_module_from(request["pristine_compressed_tensors"],
                                            "dsv4_prove_pristine_compressed_tensors").CompressedTensorsConfig
    out = {}
    with set_current_vllm_config(vllm_config):
        out["checkpoint"] = layer_schemes(variants["patched"], quant, request["layers"])
        out["weight_only_fp8"] = {label: layer_schemes(cls, weight_only, {"attention": request["weight_only_layer"]})
                                  for label, cls in variants.items()}
        out["mtp"] = mtp_decision(request, quant, variants["patched"])
    return out


NVFP4_MOE_ORDER = ["FLASHINFER_TRTLLM", "FLASHINFER_CUTEDSL", "FLASHINFER_CUTEDSL_BATCHED", "FLASHINFER_CUTLASS",
                   "VLLM_CUTLASS", "MARLIN"]  # select_nvfp4_moe_backend's order in vLLM 0.33 (oracle/nvfp4.py)


def backends(vllm_config) -> dict:
    """What vLLM's own selectors decide for the stated device without building the model: the DeepSeek-V4
    attention class (_select_dsv4_attn_cls) and, in the NVFP4 MoE oracle's order, which backends' kernels
    support the device (each kernel class's _supports_current_device; the oracle's shape checks need the
    model and run on the GPU)."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.fused_moe.oracle.nvfp4 import NvFp4MoeBackend, backend_to_kernel_cls
    from vllm.models.deepseek_v4.nvidia.model import _select_dsv4_attn_cls

    out = {"attention": _select_dsv4_attn_cls(vllm_config).__name__, "nvfp4_moe_device_support": {}}
    with set_current_vllm_config(vllm_config):
        for name in NVFP4_MOE_ORDER:
            try:
                classes = backend_to_kernel_cls(NvFp4MoeBackend[name])
                out["nvfp4_moe_device_support"][name] = any(k._supports_current_device() for k in classes)
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                out["nvfp4_moe_device_support"][name] = one_line(exc)
    supported = [n for n, ok in out["nvfp4_moe_device_support"].items() if ok is True]
    out["nvfp4_moe_first_supported"] = supported[0] if supported else None
    return out


def moe_config(vllm_config):
    """The FusedMoEConfig vLLM's FusedMoEFactory (fused_moe/layer.py) builds for a DeepSeek-V4 MoE layer past the
    hash layers (the MTP block's is one), seen from rank 0: vLLM's FusedMoEParallelConfig.make with rank
    stand-ins (no process group exists here), the router vLLM's create_fused_moe_router makes for the
    model's routing (sqrtsoftplus with the noaux_tc bias), and the SwiGLU clamp."""
    import types

    import torch
    from vllm.model_executor.layers.fused_moe import config as moe
    from vllm.model_executor.layers.fused_moe.activation import MoEActivation
    from vllm.model_executor.layers.fused_moe.router.router_factory import create_fused_moe_router

    hf, pc = vllm_config.model_config.hf_config, vllm_config.parallel_config
    rank0 = types.SimpleNamespace(rank_in_group=0)
    moe.get_tensor_model_parallel_rank, moe.get_dp_group, moe.get_pcp_group = (lambda: 0), (lambda: rank0), (lambda: rank0)
    parallel = moe.FusedMoEParallelConfig.make(tp_size_=pc.tensor_parallel_size, pcp_size_=pc.prefill_context_parallel_size,
                                               dp_size_=pc.data_parallel_size, sp_size_=1, vllm_parallel_config=pc)
    router = create_fused_moe_router(top_k=hf.num_experts_per_tok, global_num_experts=hf.n_routed_experts,
                                     renormalize=hf.norm_topk_prob, scoring_func=getattr(hf, "scoring_func", "sqrtsoftplus"),
                                     routed_scaling_factor=getattr(hf, "routed_scaling_factor", 1.0),
                                     e_score_correction_bias=torch.empty(hf.n_routed_experts, dtype=torch.float32))
    experts = hf.n_routed_experts // max(parallel.ep_size, 1)
    return moe.FusedMoEConfig(
        num_experts=hf.n_routed_experts, experts_per_token=hf.num_experts_per_tok, hidden_dim=hf.hidden_size,
        intermediate_size=hf.moe_intermediate_size, num_local_experts=experts, num_logical_experts=hf.n_routed_experts,
        moe_parallel_config=parallel, in_dtype=vllm_config.model_config.dtype,
        moe_backend=vllm_config.kernel_config.moe_backend, router_logits_dtype=torch.float32,
        max_num_tokens=vllm_config.scheduler_config.max_num_batched_tokens, activation=MoEActivation.SILU,
        is_lora_enabled=vllm_config.lora_config is not None,
        device=vllm_config.device_config.device, routing_method=router.kernel_routing_method_type,
        require_decomposed_backend=not router.supports_monolithic_kernels, swiglu_limit=hf.swiglu_limit,
        max_capture_size=vllm_config.compilation_config.max_cudagraph_capture_size)


def picks(vllm_config, config: dict) -> dict:
    """What known_issues.toml's prove rows read, each from vLLM's own function: the NVFP4 MoE oracle for the
    routed experts (select_nvfp4_moe_backend, compressed-tensors W4A4 keys), the unquantized oracle for the
    BF16 MTP experts under the draft's overrides (apply_draft_overrides, select_unquantized_moe_backend), the
    sampling methods, the target's CUDA graph mode and the drafter's (SpecDecodeBaseProposer.initialize_cudagraph_keys)."""
    import types

    from vllm.config import set_current_vllm_config

    spec, comp = vllm_config.speculative_config, vllm_config.compilation_config
    out = {"draft_sample_method": spec.draft_sample_method if spec else "no speculation",
           "rejection_sample_method": spec.rejection_sample_method if spec else "no speculation",
           "cudagraph_mode": comp.cudagraph_mode.name,
           "mtp_with_dcp": "yes" if spec and vllm_config.parallel_config.decode_context_parallel_size > 1 else "no",
           "tool_strict_level": config.get("tool_strict_level"),
           "flashinfer_autotune": vllm_config.kernel_config.enable_flashinfer_autotune}

    def attempt(key, func):
        try:
            out[key] = func()
        except Exception as exc:  # noqa: BLE001 - reported as the value, judged by the host
            out[key] = f"error: {one_line(exc)}"

    def nvfp4():
        from vllm.model_executor.layers.fused_moe.oracle.nvfp4 import select_nvfp4_moe_backend
        from vllm.model_executor.layers.quantization.utils.quant_utils import kNvfp4Dynamic, kNvfp4Static

        with set_current_vllm_config(vllm_config):
            return select_nvfp4_moe_backend(moe_config(vllm_config), kNvfp4Static, kNvfp4Dynamic)[0].name

    def mtp():
        from vllm.model_executor.layers.fused_moe.oracle.unquantized import select_unquantized_moe_backend

        draft = spec.apply_draft_overrides(vllm_config)
        with set_current_vllm_config(draft):
            return select_unquantized_moe_backend(moe_config(draft))[0].name

    def draft_graphs():
        from vllm.v1.spec_decode.llm_base_proposer import SpecDecodeBaseProposer

        seen = []
        stand_in = types.SimpleNamespace(speculative_config=spec, cudagraph_dispatcher=types.SimpleNamespace(
            initialize_cudagraph_keys=lambda mode, *rest: seen.append(mode)))
        SpecDecodeBaseProposer.initialize_cudagraph_keys(stand_in, comp.cudagraph_mode)
        return seen[0].name

    attempt("nvfp4_moe_backend", nvfp4)
    if spec:
        attempt("mtp_moe_backend", mtp)
        attempt("draft_cudagraph_mode", draft_graphs)
    else:
        out["mtp_moe_backend"] = out["draft_cudagraph_mode"] = "no speculation"
    return out


def mtp_decision(request: dict, quant: dict, config_class) -> dict:
    """What the NVIDIA DeepSeekV4MTP draft is built with: patch 0002 decides from the checkpoint."""
    try:
        from vllm.models.deepseek_v4.mtp_checkpoint import checkpoint_mtp_is_unquantized
    except ImportError:
        unquantized, how = False, "no mtp_checkpoint module (patch 0002 absent): the draft inherits the main quant config"
    else:
        unquantized = checkpoint_mtp_is_unquantized(request["model"], None)
        how = "mtp_checkpoint.checkpoint_mtp_is_unquantized read the checkpoint's index"
    layers = request["mtp_layers"]
    if unquantized:
        return {"unquantized": True, "how": how, "layers": {k: {"layer": v, "scheme": None} for k, v in layers.items()}}
    return {"unquantized": False, "how": how, "layers": layer_schemes(config_class, quant, layers)}


def main(request_path: str, result_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    register_platform_plugin()
    started = time.monotonic()
    from vllm.platforms import current_platform

    result = {"platform": type(current_platform).__name__, "cases": {}}
    if current_platform.is_cuda():
        result["capability"] = current_platform.get_device_capability().as_version_str()
    result["import_seconds"] = round(time.monotonic() - started, 1)
    for case in request["cases"]:
        outcome, cfg = run_case(case["argv"])
        result["cases"][case["id"]] = outcome
        if case["id"] in request.get("picks_for", []) and cfg is not None:
            try:
                result.setdefault("picks", {})[case["id"]] = picks(cfg, outcome["config"])
            except Exception as exc:  # noqa: BLE001 - the host reports it as a FAIL line
                result.setdefault("picks", {})[case["id"]] = {"error": one_line(exc)}
        if case["id"] == request.get("details_for") and cfg is not None:
            for key, func in (("schemes", lambda: schemes(request, cfg)), ("backends", lambda: backends(cfg))):
                try:
                    result[key] = func()
                except Exception as exc:  # noqa: BLE001 - the host reports it as a FAIL line
                    result[key] = {"error": one_line(exc)}
        Path(result_path).write_text(json.dumps(result, indent=2, default=str))
    Path(result_path).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
