"""Every generated Dockerfile fetches nothing unpinned: each download is checked against a sha256 in the same
step, pip installs only hash-locked files, git never fetches, and the compile cannot fetch what it was not given."""

import re

import pytest

from dsv4_images import matrix, render
from tests.support.fetch_lint import findings, instructions

M = matrix.load()
RENDERED = render.render_all(M)


@pytest.mark.parametrize("target", list(M.targets))
def test_the_generated_dockerfile_fetches_nothing_unpinned(target):
    assert findings(RENDERED[f"Dockerfile.{target}"], f"Dockerfile.{target}") == []


@pytest.mark.parametrize("dockerfile,why", [
    ("FROM x AS a\nRUN curl -fsSL -o /t.tgz https://example.org/t.tgz && tar -xzf /t.tgz\n", "download without a sha256"),
    ("FROM x AS a\nRUN wget -q https://example.org/t.tgz \\\n    && sha256sum t.tgz\n", "download without a sha256"),
    ("FROM x AS a\nRUN apt-get install -y curl && x=$(curl -s https://e/v)\n", "download without a sha256"),
    ("FROM x AS a\nRUN git clone --depth 1 --branch v4.7.1 https://github.com/NVIDIA/cutlass\n", "git fetches"),
    ("FROM x AS a\nRUN pip install --no-deps vllm==0.33.0\n", "pip install without --require-hashes"),
    ("FROM x AS a\nRUN pip install --require-hashes -r r.txt && pip download foo\n", "pip download without"),
    ("FROM x AS a\nADD https://example.org/t.tgz /t.tgz\n", "ADD of a URL"),
    ("FROM x AS a\nENV https_proxy=\"http://127.0.0.1:9\"\nRUN python setup.py bdist_wheel\n", "a build in a stage"),
])
def test_the_lint_catches_each_kind_of_unpinned_fetch(dockerfile, why):
    found = findings(dockerfile)
    assert len(found) == 1 and why in found[0], found


def test_the_lint_accepts_pinned_forms():
    ok = ("FROM x AS a\nRUN curl -o /t.tgz https://e/t.tgz \\\n  && echo \"" + "a" * 64 + "  /t.tgz\" | sha256sum -c -\n"
          "RUN pip install --no-deps --no-index /dist/x.whl\n"
          'ENV GIT_ALLOW_PROTOCOL="none" https_proxy="http://127.0.0.1:9"\nRUN python setup.py bdist_wheel\n'
          "ADD --checksum=sha256:" + "b" * 64 + " https://e/x /x\n")
    assert findings(ok) == []


def test_instructions_join_continuations_and_know_their_stage():
    insts = instructions("FROM a AS one\n# c\nRUN x \\\n    # inside\n    && y\nFROM one AS two\nENV K=v\n")
    assert [(kw, args, stage) for _, kw, args, stage in insts] == [
        ("FROM", "a AS one", "one"), ("RUN", "x && y", "one"), ("FROM", "one AS two", "two"), ("ENV", "K=v", "two")]


@pytest.mark.parametrize("target", ["sm100", "sm120"])
def test_the_compile_gets_every_pinned_source_through_its_override_and_nothing_else(target):
    t = M.resolve(target)
    text = RENDERED[f"Dockerfile.{target}"]
    compile_stage = text.split(" AS vllm-compile\n", 1)[1].split("\nFROM ", 1)[0]
    for key, value in t.compile_env().items():
        assert f'{key}="{value}"' in compile_stage
    for pin in t.externals:
        handed = [v for v in t.compile_env().values() if t.external_dir(pin) in v]
        assert handed or pin.parent, f"{pin.name} reaches CMake through no override"
    for key, value in t.offline_guard().items():
        assert f'{key}="{value}"' in compile_stage
    assert 'CMAKE_BUILD_TYPE="Release"' in compile_stage
    # FETCHCONTENT_FULLY_DISCONNECTED skips a missing source silently (CMP0170 is OLD for vLLM): never the guard
    assert not [args for _, kw, args, _ in instructions(text) if "FULLY_DISCONNECTED" in args]
    externals_stage = text.split(" AS vllm-externals\n", 1)[1].split("\nFROM ", 1)[0]
    for pin in t.externals:
        if not pin.missing:
            assert re.search(rf'"\$\{{VLLM_EXTERNALS_URL\}}/{re.escape(pin.archive)}".*{pin.tar_sha256}', externals_stage, re.S)


def _needed(text: str, build_args: dict) -> dict[str, set[str]]:
    """Stage -> the stages it needs, as BuildKit reads the Dockerfile with these build arguments."""
    deps, stages = {}, set()
    for _, kw, args, stage in instructions(text):
        args = re.sub(r"\$\{(\w+)\}", lambda m: build_args.get(m.group(1), m.group(0)), args)
        if kw == "FROM":
            stages.add(stage)
            deps[stage] = {args.split()[0]}
        elif stage:  # the global ARGs come before the first FROM
            deps[stage] |= set(re.findall(r"(?:--from=|,from=)([\w-]+)", args))
    return {s: {d for d in ds if d in stages} for s, ds in deps.items()}


@pytest.mark.parametrize("target,mode", [("sm100", "wheel"), ("sm120", "wheel"), ("sm120", "sdist"), ("cpu", "wheel")])
def test_the_plans_stage_list_is_what_buildkit_builds_for_that_source(target, mode):
    from dsv4_images.plan import stages
    t = M.resolve(target)
    deps = _needed(RENDERED[f"Dockerfile.{target}"], {"VLLM_SOURCE": mode})
    closure, todo = set(), ["image"]
    while todo:
        stage = todo.pop()
        if stage not in closure:
            closure.add(stage)
            todo += deps[stage]
    planned = stages(t, mode)
    assert set(planned) == closure
    assert all(planned.index(d) < planned.index(s) for s in planned for d in deps[s])
    if mode == "wheel" and t.vllm.separate_dist:
        assert "vllm-compile" not in closure and "build-tools" not in closure  # a wheel build never compiles
