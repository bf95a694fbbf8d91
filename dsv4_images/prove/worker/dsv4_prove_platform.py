"""A vLLM platform plugin (entry point group `vllm.platform_plugins`) for prove's worker: vLLM's own
CUDA platform (NonNvmlCudaPlatform) with no device behind it, stating the compute capability,
device name, memory, device count and NVLink that $DSV4_PROVE_PLATFORM gives as JSON. Every other
decision is vLLM's code. Standard library and vLLM only."""

import json
import os

STATED = json.loads(os.environ.get("DSV4_PROVE_PLATFORM", "{}"))


def platform_plugin() -> str | None:
    return "dsv4_prove_platform.StatedCudaPlatform" if STATED else None


def _platform_class():
    from vllm.platforms.cuda import NonNvmlCudaPlatform
    from vllm.platforms.interface import DeviceCapability

    major, minor = (int(x) for x in STATED["capability"].split("."))

    class StatedCudaPlatform(NonNvmlCudaPlatform):
        @classmethod
        def get_device_capability(cls, device_id: int = 0) -> DeviceCapability:
            return DeviceCapability(major=major, minor=minor)

        @classmethod
        def get_device_name(cls, device_id: int = 0) -> str:
            return STATED["name"]

        @classmethod
        def get_device_total_memory(cls, device_id: int = 0) -> int:
            return int(STATED["memory_mib"]) * 1024 * 1024

        @classmethod
        def device_count(cls) -> int:
            return int(STATED["count"])

        @classmethod
        def is_fully_connected(cls, physical_device_ids: list[int]) -> bool:
            return bool(STATED["nvlink"])

    return StatedCudaPlatform


def __getattr__(name: str):
    if name == "StatedCudaPlatform":  # built lazily: vLLM resolves the class after plugin discovery
        cls = _platform_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
