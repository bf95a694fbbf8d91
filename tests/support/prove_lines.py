"""What a passing `build.py prove` report must hold, shared by the venv run (tests/unit/test_prove_slow.py, sm100)
and the run with --image (tests/integration/test_sm_image.py, sm120)."""

from __future__ import annotations

import json


def assert_every_line_passes(data: dict, pt) -> dict[str, str]:
    """No FAIL line, and every check prove is known to run passed; returns name -> status."""
    status = {line["name"]: line["status"] for line in data["lines"]}
    failed = {line["name"]: line["detail"] for line in data["lines"] if line["status"] == "FAIL"}
    assert data["ok"] and not failed, failed
    capability = pt.devices[0].capability
    must_pass = ["env", "entrypoint.reject.TENSOR_PARALLEL_SIZE=abc", f"engine.platform@{capability}", "engine.default",
                 "engine.NUM_SPECULATIVE_TOKENS=0", "engine.reject.KV_CACHE_DTYPE=fp9",
                 "engine.reject.unknown flag --no-such-flag", "engine.reject.MAX_MODEL_LEN=2097152",
                 f"engine.reject.TENSOR_PARALLEL_SIZE={2 * pt.gpus}",
                 "engine.reject.MAX_NUM_SEQS=4096 MAX_NUM_BATCHED_TOKENS=1024",
                 f"ours.reject.NUM_SPECULATIVE_TOKENS={pt.max_speculative_tokens + 1}",
                 "ours.reject.--cudagraph-capture-sizes 3 5", "schemes.attention.fused_wqa_wkv",
                 "schemes.experts.gate_proj", "schemes.patch-0001", "schemes.mtp-block", "schemes.indexer",
                 f"backends.attention@{capability}", "archs.configure", "archs.table", f"archs.{pt.kernel.archs}",
                 "kernel.compile", "kernel.sass", "runtime.triton-launcher", "runtime.nvcc-host-compiler",
                 "runtime.pip-check"]
    assert {n: status.get(n) for n in must_pass} == {n: "PASS" for n in must_pass}
    assert all(status[f"runtime.flashinfer.{m}@{capability}"] == "PASS" for m in pt.flashinfer_prebuilt
               if f"runtime.flashinfer.{m}@{capability}" in status)
    assert status["runtime.fetch.huggingface"] == "INFO"
    for model in json.loads(pt.serve_defaults.read_text())["serve"].get("models", {}):
        assert status[f"engine.MODEL={model}"] == "PASS"  # each other checkpoint the target serves
    return status
