#!/usr/bin/env python3
"""Size vLLM's compile to the builder's memory (stdlib only; the compile stage runs it before setup.py).

    eval "$(compile_jobs.py --job-memory-gib 9 --nvcc-threads 1)"   # exports MAX_JOBS and NVCC_THREADS

vLLM's setup.py runs MAX_JOBS // NVCC_THREADS nvcc processes at once, each compiling up to NVCC_THREADS
gencode targets in parallel. A single sm120 CUTLASS file took 7.3-9.3 GB RSS in one nvcc job, so the
number of parallel jobs is the memory this build may use (MemAvailable, or the cgroup's limit when lower)
divided by --job-memory-gib per thread, at most one per CPU and at least one. MAX_JOBS or NVCC_THREADS
already set (the build arguments of the same names) win. One line on stderr says what was chosen and why.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

GIB = 1 << 30
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def mem_available(meminfo: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no MemAvailable line in /proc/meminfo")


def cgroup_limit(paths=CGROUP_LIMITS) -> int | None:
    for path in paths:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None  # "max", or no memory controller


def _positive(env: dict, key: str) -> int | None:
    text = env.get(key, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{key}={text!r} is not a positive whole number")
    return int(text)


def choose(env: dict, job_memory_gib: int, default_threads: int, memory: int, cpus: int) -> tuple[int, int, str]:
    """(MAX_JOBS, NVCC_THREADS, why)."""
    threads = _positive(env, "NVCC_THREADS") or default_threads
    jobs = _positive(env, "MAX_JOBS")
    if jobs:
        return jobs, threads, "MAX_JOBS set by the build argument"
    by_memory = memory // (job_memory_gib * GIB * threads)
    parallel = max(1, min(cpus, by_memory))
    why = (f"{memory / GIB:.1f} GiB available / {job_memory_gib} GiB per nvcc job"
           f"{f' x {threads} threads' if threads > 1 else ''} = {by_memory}, {cpus} CPUs")
    return parallel * threads, threads, why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--job-memory-gib", type=int, required=True)
    parser.add_argument("--nvcc-threads", type=int, required=True, help="unless NVCC_THREADS is set")
    args = parser.parse_args(argv)
    try:
        memory = mem_available(Path("/proc/meminfo").read_text())
        limit = cgroup_limit()
        if limit is not None:
            memory = min(memory, limit)
        jobs, threads, why = choose(os.environ, args.job_memory_gib, args.nvcc_threads, memory,
                                    len(os.sched_getaffinity(0)))
    except (OSError, ValueError) as exc:
        print(f"error: cannot size the compile: {exc}", file=sys.stderr)
        return 1
    print(f"compile: MAX_JOBS={jobs} NVCC_THREADS={threads} ({why}; {jobs // threads} nvcc processes at once)",
          file=sys.stderr)
    print(f"export MAX_JOBS={jobs} NVCC_THREADS={threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
