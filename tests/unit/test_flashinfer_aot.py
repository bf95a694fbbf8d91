"""dsv4_images/flashinfer_aot.py: the cubin fetch verifies every byte against pins, the wheel is one FlashInfer's
AOTProvider lookup accepts (checked with FlashInfer's own code from the locked wheel), and errors are one line."""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from dsv4_images import REPO_ROOT, matrix, wheelhouse
from dsv4_images import flashinfer_aot as aot
from tests.support.local_files import served_directory

M = matrix.load()
SM100 = M.resolve("sm100")


# ---- a local artifact server --------------------------------------------------------------------

@pytest.fixture
def artifact_server(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    with served_directory(root) as url:
        yield root, f"{url}/"


def _publish(root: Path, package: str, files: dict[str, bytes]) -> str:
    """Write a package the way NVIDIA's server lays it out; returns its checksums.txt sha256."""
    for name, data in files.items():
        (root / package / name).parent.mkdir(parents=True, exist_ok=True)
        (root / package / name).write_bytes(data)
    manifest = "".join(f"{hashlib.sha256(d).hexdigest()} {n}\n" for n, d in files.items()).encode()
    (root / package / "checksums.txt").write_bytes(manifest)
    return hashlib.sha256(manifest).hexdigest()


PACKAGE = "0123456789abcdef0123456789abcdef01234567/batched_gemm-x/"
FILES = {"Bmm_a.cubin": b"\x7fELF cubin a", "include/flashinferMetaInfo.h": b"// meta\n"}


def test_fetch_bakes_every_listed_file_verified(artifact_server, tmp_path):
    root, url = artifact_server
    pin = _publish(root, PACKAGE, FILES)
    out = tmp_path / "cubins"
    assert aot.fetch_package(url, out, PACKAGE, pin, progress=lambda _: None) == 2
    for name, data in FILES.items():
        assert (out / PACKAGE / name).read_bytes() == data  # FlashInfer reads FLASHINFER_CUBIN_DIR/<path>/<file>
    # A second run (a build cache) downloads nothing; the files are verified again.
    lines = []
    aot.fetch_package(url, out, PACKAGE, pin, progress=lines.append)
    assert "(0 downloaded" in lines[0]


def test_a_checksums_file_that_does_not_match_its_pin_is_refused(artifact_server, tmp_path):
    root, url = artifact_server
    _publish(root, PACKAGE, FILES)
    with pytest.raises(aot.AotError, match="checksums.txt: sha256 .* expected 0{64}"):
        aot.fetch_package(url, tmp_path / "cubins", PACKAGE, "0" * 64)
    assert not (tmp_path / "cubins" / PACKAGE / "checksums.txt").exists()


def test_a_tampered_cubin_is_refused_and_not_kept(artifact_server, tmp_path):
    root, url = artifact_server
    pin = _publish(root, PACKAGE, FILES)
    (root / PACKAGE / "Bmm_a.cubin").write_bytes(b"something else")
    with pytest.raises(aot.AotError, match=r"Bmm_a\.cubin: sha256"):
        aot.fetch_package(url, tmp_path / "cubins", PACKAGE, pin)
    assert not (tmp_path / "cubins" / PACKAGE / "Bmm_a.cubin").exists()


def test_an_unreachable_repository_is_one_line(tmp_path):
    with pytest.raises(aot.AotError, match="cannot download http://127.0.0.1:9/"):
        aot._download("http://127.0.0.1:9/x", attempts=1)


@pytest.mark.parametrize("text,message", [
    ("", "lists no files"),
    ("nothex Bmm.cubin\n", "line 1 is not"),
    (f"{'a' * 64} ../../etc/passwd\n", "outside its package"),
    (f"{'a' * 64} /abs.cubin\n", "outside its package"),
])
def test_checksums_files_are_parsed_strictly(text, message):
    with pytest.raises(aot.AotError, match=message):
        aot.parse_checksums(text)


# ---- the pins against FlashInfer's own -----------------------------------------------------------

@pytest.fixture(scope="module")
def flashinfer_wheel() -> Path:
    """The flashinfer-python wheel the sm locks pin (from the download cache, else fetched and verified)."""
    lock = REPO_ROOT / SM100.lock_paths["runtime"]
    req = next(r for r in wheelhouse.parse_lock(lock.read_text(), lock.name) if r.name == "flashinfer-python")
    for digest in req.hashes:
        cached = sorted((wheelhouse.downloads.CACHE / "files" / digest[:2] / digest).glob("*.whl"))
        if cached:
            return cached[0]
    tags = wheelhouse.supported_tags(SM100.toolchain.python, SM100.toolchain.wheel_platform)
    return wheelhouse.download(wheelhouse.select_file(req, wheelhouse._simple_index(req.name), tags))


def _flashinfer_source(wheel: Path, path: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(path).decode()


def _class_constants(source: str, cls: str) -> dict[str, str]:
    tree = ast.parse(source)
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    return {n.target.id: ast.literal_eval(n.value) for n in body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and isinstance(n.value, ast.Constant)}


def test_the_cubin_pins_are_the_locked_flashinfer_s_own(flashinfer_wheel):
    source = _flashinfer_source(flashinfer_wheel, "flashinfer/artifacts.py")
    artifacts = types.SimpleNamespace(ArtifactPath=types.SimpleNamespace(**_class_constants(source, "ArtifactPath")),
                                      CheckSumHash=types.SimpleNamespace(**_class_constants(source, "CheckSumHash")))
    packages = [(c.name, c.path, c.checksums_sha256) for c in SM100.flashinfer.cubin_packages]
    assert packages
    aot.check_pins_agree(packages, artifacts)
    with pytest.raises(aot.AotError, match="TRTLLM_GEN_BMM: matrix.toml pins .* but the installed FlashInfer expects"):
        aot.check_pins_agree([("TRTLLM_GEN_BMM", packages[0][1], "f" * 64)], artifacts)


def test_every_module_generator_exists_in_the_locked_flashinfer(flashinfer_wheel):
    for t in M.targets.values():
        for m in (t.flashinfer.modules if t.flashinfer else ()):
            module, function = m.generator.split(":")
            source = _flashinfer_source(flashinfer_wheel, module.replace(".", "/") + ".py")
            defs = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
            assert function in defs, (t.name, m.generator)
            assert f'"{m.name}"' in source or m.name.startswith(("fused_moe_", "fp4_quantization_")), (t.name, m.name)


# ---- the wheel ------------------------------------------------------------------------------------

@pytest.fixture
def installed_wheel(tmp_path):
    built = {}
    for name in ("sparse_mla_sm120", "sampling"):
        so = tmp_path / "build" / name / f"{name}.so"
        so.parent.mkdir(parents=True)
        so.write_bytes(f"not really a shared object: {name}".encode())
        built[name] = so
    wheel = aot.write_wheel(tmp_path / "dist", "0.7.2.post1", "sm120", ["sm120f"], built)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True)
    sys.path.insert(0, str(target))
    sys.modules.pop(aot.PACKAGE, None)
    try:
        yield wheel, target, importlib.import_module(aot.PACKAGE)
    finally:
        sys.path.remove(str(target))
        sys.modules.pop(aot.PACKAGE, None)


def test_the_wheel_is_reproducible_and_its_record_is_right(installed_wheel, tmp_path):
    wheel, target, _ = installed_wheel
    again = aot.write_wheel(tmp_path / "again", "0.7.2.post1", "sm120", ["sm120f"],
                            {n: tmp_path / "build" / n / f"{n}.so" for n in ("sparse_mla_sm120", "sampling")})
    assert again.read_bytes() == wheel.read_bytes()
    import importlib.metadata as md
    dist = md.Distribution.at(next(target.glob("*.dist-info")))
    assert dist.metadata["Name"] == "flashinfer-jit-cache" and dist.version == "0.7.2.post1+dsv4.sm120"
    for f in dist.files:
        if f.hash:
            assert hashlib.sha256((target / f).read_bytes()).digest() == \
                __import__("base64").urlsafe_b64decode(f.hash.value + "==")


def _cuda_architecture_score(wheel: Path):
    """FlashInfer's cuda_binary_target_compatibility_score, from the locked wheel (a self-contained module)."""
    module = types.ModuleType("fi_cuda_architecture")
    sys.modules[module.__name__] = module  # its dataclass looks its module up
    try:
        exec(compile(_flashinfer_source(wheel, "flashinfer/jit/_cuda_architecture.py"), module.__name__, "exec"),
             module.__dict__)
    finally:
        sys.modules.pop(module.__name__)
    return module.cuda_binary_target_compatibility_score


def _flashinfer_functions(wheel: Path, path: str, names: list[str], **namespace) -> dict:
    """FlashInfer's own functions, executed from the locked wheel's source (no torch needed for these)."""
    tree = ast.parse(_flashinfer_source(wheel, path))
    code = ast.Module([n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names], type_ignores=[])
    exec(compile(code, path, "exec"), namespace)
    return namespace


def test_flashinfer_s_own_provider_checks_accept_the_wheel(installed_wheel, flashinfer_wheel):
    """What flashinfer/jit/env.py does with an installed flashinfer_jit_cache, run on ours: the version checks,
    every provider attribute it reads, the architecture match for the device, the module path it loads."""
    _, target, shim = installed_wheel
    env_source = _flashinfer_source(flashinfer_wheel, "flashinfer/jit/env.py")
    read = {n.attr for n in ast.walk(ast.parse(env_source))
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "provider"}
    providers = shim.get_jit_cache_providers()
    assert len(providers) == 1 and read and all(hasattr(providers[0], a) for a in read), read
    ns = _flashinfer_functions(flashinfer_wheel, "flashinfer/jit/env.py",
                               ["_check_jit_cache_version", "_check_jit_cache_provider_version"],
                               os=__import__("os"), flashinfer_version="0.7.2.post1", _VERSION_MISMATCH_HINT="")
    ns["_check_jit_cache_version"]("flashinfer-jit-cache", shim.__version__)
    ns["_check_jit_cache_provider_version"](providers[0].distribution, providers[0].version, shim.__version__)
    with pytest.raises(RuntimeError):  # the check is real: another FlashInfer version is refused
        _flashinfer_functions(flashinfer_wheel, "flashinfer/jit/env.py", ["_check_jit_cache_version"],
                              os=__import__("os"), flashinfer_version="0.7.3",
                              _VERSION_MISMATCH_HINT="")["_check_jit_cache_version"]("x", shim.__version__)
    score = _cuda_architecture_score(flashinfer_wheel)
    assert score(providers[0].cuda_architectures[0], "sm120f") is not None  # an RTX PRO 6000 as FlashInfer names it
    assert score(providers[0].cuda_architectures[0], "sm100a") is None  # never loaded on a B200
    for name in providers[0].modules:
        assert (Path(providers[0].jit_cache_dir) / name / f"{name}.so").is_file()


def test_the_provider_architectures_are_the_ones_flashinfer_names_the_target_gpus(flashinfer_wheel):
    """FlashInfer names a device from its capability (compilation_context.py _normalize_cuda_arch: SM10x 'a',
    SM12.0 'f' on CUDA >= 12.9); the provider built from the matrix arch list must match each of the target's GPUs."""
    score = _cuda_architecture_score(flashinfer_wheel)
    for t in (M.resolve("sm100"), M.resolve("sm120")):
        for capability in t.compute_capabilities:
            major, minor = capability.split(".")
            device = f"sm{major}{minor}{'f' if major == '12' else 'a'}"
            assert any(score(a, device) for a in t.flashinfer_architectures), (t.name, device)
            assert aot.architectures(t.toolchain.flashinfer_cuda_arch_list) == list(t.flashinfer_architectures)


# ---- small parts and the command line ------------------------------------------------------------

def test_parallel_jobs_follow_memory_and_cores():
    meminfo = "MemTotal: 99 kB\nMemAvailable: {} kB\n"
    assert aot.parallel_jobs(8, meminfo.format(20 * 1024 * 1024), cpus=16) == 2
    assert aot.parallel_jobs(8, meminfo.format(200 * 1024 * 1024), cpus=16) == 16
    assert aot.parallel_jobs(8, meminfo.format(1024), cpus=16) == 1


def test_a_malformed_module_argument_is_one_line(capsys):
    assert aot.main(["check", "--device-arch", "12.0f", "--module", "sampling"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --module 'sampling': expected NAME=package.module:function") and err.count("\n") == 1


def test_a_renamed_flashinfer_module_is_named(monkeypatch):
    fake = types.ModuleType("fake_fi")
    fake.gen = lambda: types.SimpleNamespace(name="sampling_v2")
    monkeypatch.setitem(sys.modules, "fake_fi", fake)
    with pytest.raises(aot.AotError, match="fake_fi:gen now makes module 'sampling_v2', not 'sampling'"):
        aot.make_spec("sampling", "fake_fi:gen")


def test_a_generator_flashinfer_refuses_is_one_line(monkeypatch):
    fake = types.ModuleType("fake_fi")

    def gen():
        raise RuntimeError("No supported CUDA architectures found for major versions [12].\nmore")
    fake.gen = gen
    monkeypatch.setitem(sys.modules, "fake_fi", fake)
    with pytest.raises(aot.AotError) as exc:
        aot.make_spec("sparse_mla_sm120", "fake_fi:gen")
    assert str(exc.value) == "fake_fi:gen: No supported CUDA architectures found for major versions [12]."


def test_providers_json_matches_the_modules(installed_wheel):
    wheel, _, _ = installed_wheel
    with zipfile.ZipFile(wheel) as zf:
        providers = json.loads(zf.read("flashinfer_jit_cache/providers.json"))
        names = set(zf.namelist())
    assert providers[0]["modules"] == ["sampling", "sparse_mla_sm120"]
    assert {f"flashinfer_jit_cache/sm120/{m}/{m}.so" for m in providers[0]["modules"]} <= names


def test_the_ninja_log_gives_outputs_and_compile_seconds_per_module():
    """What the build prints per module, and what an interrupted build had finished (the log keeps it)."""
    log = ("# ninja log v5\n"
           "0\t142000\t1764547200\tsampling/sampling.cuda.o\tabc\n"
           "10\t2010\t1764547200\tsampling/sampling.so\tdef\n"
           "0\t600500\t1764547200\tfused_moe_trtllm_sm100/a.cuda.o\tghi\n"
           "9\t5\t1764547200\tsampling/x.o\tjkl\n"  # ends before it starts: a damaged log
           "1\t2\t1764547200\t\tmno\n"  # no output named
           "5\t9")  # cut short by a kill
    assert aot.ninja_summary(log) == {"sampling": (2, 144.0), "fused_moe_trtllm_sm100": (1, 600.5)}
    lines = []
    aot.report_ninja_log(Path("/nonexistent"), lines.append)
    assert lines == []


def test_before_a_build_the_summary_says_what_the_cache_mount_already_holds(tmp_path):
    lines = []
    aot.report_ninja_log(tmp_path, lines.append, before=True)
    assert lines == ["aot: the ninja cache holds nothing yet: every output is compiled"]
    (tmp_path / ".ninja_log").write_text("# ninja log v5\n0\t142000\t1764547200\tsampling/sampling.cuda.o\tabc\n")
    lines.clear()
    aot.report_ninja_log(tmp_path, lines.append, before=True)
    assert lines == ["aot: cache: module sampling: 1 outputs from an earlier build, 142 s of compile"]
    (tmp_path / ".ninja_log").write_text("# ninja log v5\n9\t5\t1\tsampling/x.o\th\n")  # nothing usable in it
    lines.clear()
    aot.report_ninja_log(tmp_path, lines.append, before=True)
    assert lines == ["aot: the ninja cache holds nothing yet: every output is compiled"]


def test_outputs_named_by_absolute_path_count_for_their_module_under_the_ninja_directory(tmp_path):
    """FlashInfer's build.ninja names outputs by absolute path (seen in the sm120 full build: the first
    summary lumped 17 outputs under an empty module name)."""
    root = "/root/.cache/flashinfer-aot/.cache/flashinfer/0.7.2.post1/120f/cached_ops"
    log = ("# ninja log v5\n"
           f"0\t60000\t1\t{root}/sparse_mla_sm120/a.cuda.o\th\n"
           f"0\t300000\t1\t{root}/fused_moe_120/b.cuda.o\th\n"
           f"5\t600005\t1\t{root}/fused_moe_120/c.cuda.o\th\n")
    assert aot.ninja_summary(log, root + "/") == {"sparse_mla_sm120": (1, 60.0), "fused_moe_120": (2, 900.0)}
    (tmp_path / ".ninja_log").write_text(log.replace(root, str(tmp_path)))
    lines = []
    aot.report_ninja_log(tmp_path, lines.append)
    assert lines == ["aot: module fused_moe_120: 2 outputs, 900 s of compile (summed over jobs)",
                     "aot: module sparse_mla_sm120: 1 outputs, 60 s of compile (summed over jobs)"]
