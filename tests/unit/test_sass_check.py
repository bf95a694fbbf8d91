"""The SASS checker the build stages run on vLLM's wheel, on real cuobjdump output (tests/fixtures/cuobjdump:
PyPI's vLLM 0.33.0 extensions and kernels built with nvcc for sm_100a, sm_100f, sm_120f, ...)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dsv4_images import REPO_ROOT
from dsv4_images.in_image import sass_check as sc

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "cuobjdump"
SCRIPT = REPO_ROOT / "dsv4_images" / "in_image" / "sass_check.py"


def entries(name: str) -> list[tuple[str, str]]:
    text = (FIXTURES / f"{name}.res-usage.txt").read_text()
    return [] if sc.NO_DEVICE_CODE in text else sc.parse_res_usage(text)


@pytest.mark.parametrize("name,expected", [
    ("wheel_qutlass_C", {("elf", "sm_100f"): 6}),
    ("wheel_moe_C", {("elf", "sm_75"): 16, ("elf", "sm_80"): 23, ("elf", "sm_86"): 8, ("elf", "sm_89"): 13,
                     ("elf", "sm_90"): 8, ("elf", "sm_100"): 8, ("elf", "sm_120"): 8, ("elf", "sm_120f"): 19,
                     ("ptx", "sm_80"): 15}),
    ("wheel_fa2_C", {("elf", "sm_80"): 76, ("ptx", "sm_80"): 76}),
    ("nvcc_sm_100a", {("elf", "sm_100a"): 2}),
    ("nvcc_sm_100_ptx80", {("elf", "sm_100"): 2, ("ptx", "sm_80"): 1}),
    ("wheel_spinloop", {}),
])
def test_res_usage_is_read_per_fatbin_entry_and_agrees_with_the_elf_listing(name, expected):
    found = entries(name)
    assert {key: found.count(key) for key in set(found)} == expected
    listed = sc.count_listed_elf((FIXTURES / f"{name}.lelf.txt").read_text())
    assert listed == sum(n for (kind, _), n in expected.items() if kind == "elf")


def test_the_elf_listing_drops_the_family_suffix_which_is_why_res_usage_is_read():
    listed = (FIXTURES / "nvcc_sm_100f.lelf.txt").read_text().splitlines()
    assert listed and all(line.endswith(".sm_100.cubin") for line in listed)
    assert entries("nvcc_sm_100f") == [("elf", "sm_100f")] * 2


@pytest.mark.parametrize("arch,cc,runs", [
    ("sm_100", (10, 0), True), ("sm_100", (10, 3), True), ("sm_100f", (10, 3), True), ("sm_100a", (10, 0), True),
    ("sm_100a", (10, 3), False), ("sm_103f", (10, 0), False), ("sm_103a", (10, 3), True), ("sm_120f", (12, 1), True),
    ("sm_120", (12, 0), True), ("sm_121", (12, 0), False), ("sm_90", (10, 0), False), ("sm_90a", (9, 0), True),
    ("sm_100f", (12, 0), False),
])
def test_cubin_compatibility_follows_cuda_rules(arch, cc, runs):
    assert sc.cubin_runs_on(arch, cc) is runs


def test_ptx_runs_later_architectures_only_through_the_jit():
    assert sc.ptx_runs_on("sm_80", (12, 0)) and not sc.ptx_runs_on("sm_90", (8, 9))
    assert not any(sc.cubin_runs_on(a, (12, 0)) for k, a in entries("wheel_fa2_C") if k == "elf")


def test_pypi_wheel_extensions_pass_for_sm120_what_they_hold():
    found = {"vllm/_moe_C_stable_libtorch.abi3.so": entries("wheel_moe_C"), "vllm/_qutlass_C.abi3.so": entries("wheel_qutlass_C"),
             "vllm/spinloop.abi3.so": []}
    assert sc.judge(found, ["12.0"], ["vllm/_moe_C_stable_libtorch.abi3.so"]) == []


def test_a_required_extension_without_sass_for_a_compute_capability_fails():
    found = {"vllm/_qutlass_C.abi3.so": entries("wheel_qutlass_C")}
    assert sc.judge(found, ["12.0"], ["vllm/_qutlass_C.abi3.so"]) == [
        "vllm/_qutlass_C.abi3.so has no SASS that runs on compute capability 12.0 (it holds sm_100f)"]


def test_ptx_alone_does_not_count_for_a_required_extension():
    errors = sc.judge({"fa2.so": entries("wheel_fa2_C")}, ["12.0"], ["fa2.so"])
    assert errors == ["fa2.so has no SASS that runs on compute capability 12.0 (it holds sm_80)"]


def test_missing_and_host_only_required_extensions_fail():
    found = {"vllm/spinloop.abi3.so": entries("wheel_spinloop")}
    assert sc.judge(found, ["10.0"], ["vllm/spinloop.abi3.so", "vllm/_C_stable_libtorch.abi3.so"]) == [
        "vllm/spinloop.abi3.so holds no device code", "vllm/_C_stable_libtorch.abi3.so is missing"]


def test_sm_100a_code_fails_an_image_for_b200_and_b300_even_beside_family_code():
    """vllm#56548: a list with both 10.0 and 10.0a gave sm_100a kernels, which do not run on B300 (10.3)."""
    for name in ("nvcc_sm_100a", "nvcc_sm_100f_100a"):
        errors = sc.judge({f"{name}.so": entries(name)}, ["10.0", "10.3"], [])
        assert errors == [f"{name}.so holds sm_100a code, which runs on 10.0 but not on 10.3: a wrong arch "
                          "slipped into the build (see vllm#56548)"]
    assert sc.judge({"a.so": entries("nvcc_sm_100a")}, ["10.0"], ["a.so"]) == []  # a 10.0-only image could run it


def test_family_and_generic_code_pass_for_both_blackwell_datacenter_parts():
    found = {"f.so": entries("nvcc_sm_100f"), "g.so": entries("nvcc_sm_100_ptx80")}
    assert sc.judge(found, ["10.0", "10.3"], ["f.so", "g.so"]) == []
    assert "has no SASS that runs on compute capability 10.0" in sc.judge({"x.so": entries("nvcc_sm_120f")}, ["10.0"], ["x.so"])[0]


# ---- the script as the Dockerfile runs it (a stand-in cuobjdump that replays the captured output) ----

@pytest.fixture
def fake_cuobjdump(tmp_path):
    script = tmp_path / "cuobjdump"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, pathlib
        option, path = sys.argv[1], pathlib.Path(sys.argv[2])
        kind = {{"-res-usage": "res-usage", "-lelf": "lelf"}}[option]
        text = (pathlib.Path({str(FIXTURES)!r}) / f"{{path.stem}}.{{kind}}.txt").read_text()
        if "does not contain device code" in text:
            sys.stderr.write(text); sys.exit(255)
        sys.stdout.write(text)
        """))
    script.chmod(0o755)
    return script


def run(source, *args, cuobjdump):
    return subprocess.run([sys.executable, str(SCRIPT), str(source), *args, "--cuobjdump", str(cuobjdump)],
                          capture_output=True, text=True)


def extension_dir(tmp_path, *names) -> Path:
    d = tmp_path / "ext"
    d.mkdir()
    for name in names:
        (d / f"{name}.so").write_bytes(b"")
    return d


def test_the_script_passes_a_good_set_and_prints_what_each_holds(tmp_path, fake_cuobjdump):
    d = extension_dir(tmp_path, "nvcc_sm_100f", "nvcc_sm_100_ptx80", "wheel_spinloop")
    result = run(d, "--runs-on", "10.0", "10.3", "--require", "nvcc_sm_100f.so", cuobjdump=fake_cuobjdump)
    assert result.returncode == 0, result.stderr
    assert "nvcc_sm_100f.so: SASS sm_100f x2 -> 10.0 SASS, 10.3 SASS" in result.stdout
    assert "wheel_spinloop.so: no device code" in result.stdout


def test_the_script_fails_with_one_line_per_finding(tmp_path, fake_cuobjdump):
    d = extension_dir(tmp_path, "nvcc_sm_100a", "wheel_fa2_C")
    result = run(d, "--runs-on", "10.0", "10.3", "--require", "wheel_fa2_C.so", cuobjdump=fake_cuobjdump)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines) and len(lines) == 3, lines
    assert any("nvcc_sm_100a.so holds sm_100a code" in line for line in lines)


def test_output_it_does_not_understand_is_exit_2_not_a_pass(tmp_path, fake_cuobjdump):
    d = extension_dir(tmp_path, "nvcc_sm_100f")
    odd = tmp_path / "odd-cuobjdump"
    odd.write_text(f"#!/bin/sh\nif [ \"$1\" = -lelf ]; then echo 'ELF file 1: x.sm_100.cubin'; exit 0; fi\n"
                   f"exec {fake_cuobjdump} \"$@\"\n")
    odd.chmod(0o755)
    result = run(d, "--runs-on", "10.0", cuobjdump=odd)
    assert result.returncode == 2 and "output format not understood" in result.stderr
    gone = run(d, "--runs-on", "10.0", cuobjdump=tmp_path / "nope")
    assert gone.returncode == 2 and "nope is not an executable cuobjdump" in gone.stderr
    bad_cc = run(d, "--runs-on", "ten", cuobjdump=fake_cuobjdump)
    assert bad_cc.returncode == 2 and "not a compute capability" in bad_cc.stderr


def test_the_checker_needs_nothing_but_the_standard_library():
    source = SCRIPT.read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "argparse", "os", "re", "shutil", "subprocess", "sys", "tempfile", "zipfile", "pathlib"}
    assert os.access(SCRIPT, os.R_OK)
