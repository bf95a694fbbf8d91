"""MAX_JOBS and NVCC_THREADS for the compile, sized to the builder's memory (9 GiB per nvcc job: the spike's
7.3-9.3 GB RSS for single sm120 CUTLASS files) unless the build arguments set them."""

import os
import subprocess
import sys

import pytest

from dsv4_images import REPO_ROOT, matrix
from dsv4_images.in_image import compile_jobs as cj

GIB = 1 << 30
SCRIPT = REPO_ROOT / "dsv4_images" / "in_image" / "compile_jobs.py"


@pytest.mark.parametrize("memory_gib,cpus,threads,expected", [
    (21, 2, 1, 2),      # this machine: 21 GiB free, 2 CPUs
    (21, 16, 1, 2),     # memory-bound: 16 CPUs, only 2 jobs fit
    (200, 16, 1, 16),   # CPU-bound
    (5, 8, 1, 1),       # less than one job's worth: still one
    (72, 16, 2, 8),     # two gencodes per nvcc: 4 processes x 2 threads; setup.py divides MAX_JOBS by NVCC_THREADS
])
def test_jobs_follow_memory_and_cpus(memory_gib, cpus, threads, expected):
    jobs, got_threads, why = cj.choose({"NVCC_THREADS": str(threads)}, 9, 1, memory_gib * GIB, cpus)
    assert (jobs, got_threads) == (expected, threads)
    assert "GiB per nvcc job" in why


def test_build_arguments_win_and_empty_ones_do_not_count():
    assert cj.choose({"MAX_JOBS": "12"}, 9, 1, 4 * GIB, 2)[:2] == (12, 1)
    assert cj.choose({"MAX_JOBS": "", "NVCC_THREADS": ""}, 9, 1, 30 * GIB, 8)[:2] == (3, 1)


@pytest.mark.parametrize("env", [{"MAX_JOBS": "lots"}, {"MAX_JOBS": "0"}, {"NVCC_THREADS": "-1"}])
def test_a_bad_value_is_one_clear_error(env):
    with pytest.raises(ValueError, match=r"is not a positive whole number"):
        cj.choose(env, 9, 1, 30 * GIB, 8)


def test_memory_is_mem_available_capped_by_the_cgroup(tmp_path):
    assert cj.mem_available("MemTotal: 100 kB\nMemAvailable:   2048 kB\n") == 2048 * 1024
    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    v2.write_text("max\n")
    v1.write_text("8589934592\n")
    assert cj.cgroup_limit([str(v2), str(v1)]) == 8 * GIB
    assert cj.cgroup_limit([str(v2), str(none)]) is None


def test_the_script_exports_both_and_says_why_on_stderr():
    env = {k: v for k, v in os.environ.items() if k not in ("MAX_JOBS", "NVCC_THREADS")}
    result = subprocess.run([sys.executable, str(SCRIPT), "--job-memory-gib", "9", "--nvcc-threads", "1"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0
    assert result.stdout.startswith("export MAX_JOBS=") and " NVCC_THREADS=1" in result.stdout
    assert result.stderr.startswith("compile: MAX_JOBS=") and "GiB available" in result.stderr
    bad = subprocess.run([sys.executable, str(SCRIPT), "--job-memory-gib", "9", "--nvcc-threads", "1"],
                         capture_output=True, text=True, env={**env, "MAX_JOBS": "x"})
    assert bad.returncode == 1 and bad.stderr.strip() == "error: cannot size the compile: MAX_JOBS='x' is not a positive whole number"


def test_the_dockerfile_sizes_the_compile_with_the_matrix_figures():
    from dsv4_images import render
    m = matrix.load()
    for name in ("sm100", "sm120"):
        t = m.resolve(name)
        text = render.render_dockerfile(m, t)
        assert "ARG MAX_JOBS\nARG NVCC_THREADS\n" in text
        assert (f'eval "$(python /tmp/compile_jobs.py --job-memory-gib {t.vllm.compile.job_memory_gib} '
                f'--nvcc-threads {t.vllm.compile.nvcc_threads})"') in text
        assert "MAX_JOBS=16" not in text and "NVCC_THREADS=4" not in text
