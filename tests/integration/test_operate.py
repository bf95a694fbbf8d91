"""Operating the cpu image as users do (issue 12): any UID in group 0, secrets kept out of the logs,
probes that ask the real server, a too-small /dev/shm or an unwritable cache refused in one line,
caches that survive a restart, and the README's run commands exactly as written."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from dsv4_images import REPO_ROOT
from dsv4_images.serving import container, start, stop
from dsv4_images.verify import client

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]
API_KEY, HF_TOKEN = "sk-dsv4-test-7f3a9c2e", "hf_dsv4testtokenvalue"


def _exit_of(c, timeout: int = 180) -> tuple[int, str]:
    """Start a container that should refuse to serve; its exit code and logs."""
    c.start()
    try:
        status = c.get_wrapped_container().wait(timeout=timeout)
        out, err = c.get_logs()
        return status["StatusCode"], (out + err).decode(errors="replace")
    finally:
        stop(c)


def test_docker_s_default_shm_is_refused_in_one_line_saying_what_to_pass(cpu_image):
    code, logs = _exit_of(container(cpu_image[0], shm_size=None))
    assert code == 2, logs
    errors = [line for line in logs.splitlines() if "error:" in line]
    assert errors == [errors[0]] and "/dev/shm is 64 MiB but this image needs at least" in errors[0]
    assert "--shm-size=1g" in errors[0] and "Traceback" not in logs


def test_a_host_cache_directory_the_container_cannot_write_is_one_line(cpu_image, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    os.chown(cache, 1000, 1000)  # a host user's ~/.cache, not writable by uid 2000 nor group 0
    c = container(cpu_image[0]).with_volume_mapping(str(cache), "/home/dsv4/.cache", "rw")
    code, logs = _exit_of(c)
    assert code == 2, logs
    assert "the cache directory /home/dsv4/.cache is not writable (owned by uid 1000 gid 1000, mode 0o755" in logs
    assert "--user <owner uid>:0" in logs and "Traceback" not in logs


def _serve_as(image: str, uid: int, volume: str):
    c = container(image, env={"VLLM_EXTRA_ARGS": f"--api-key {API_KEY}", "HF_TOKEN": HF_TOKEN},
                  user=f"{uid}:0").with_volume_mapping(volume, "/home/dsv4/.cache", "rw")
    return start(c, timeout=900)


def _complete(url: str, key: str) -> dict:
    body = json.dumps({"model": "tiny-mtp", "prompt": "def add(a, b):", "max_tokens": 8}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", data=body, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def _get(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # nothing listening yet
        return 0


def test_any_uid_serves_keeps_secrets_out_of_the_logs_and_a_restart_reuses_the_caches(cpu_image, mtp_server,
                                                                                        cache_volume, report):
    """The session's MTP server started cold as one arbitrary UID on the cache volume; a second UID starts
    on the same volume while the first still serves (replicas sharing it), with an API key and a token."""
    first_uid = mtp_server.docker.exec_run("id -u").output.decode().strip()
    first = re.search(r"caches: cold for build ([0-9a-f]{16})", mtp_server.logs())
    assert first and first_uid not in ("0", "2000"), (first_uid, mtp_server.logs()[-2000:])
    # group 0 may write what the first UID made
    listing = mtp_server.docker.exec_run(["sh", "-c", "find /home/dsv4/.cache/dsv4-flash -maxdepth 2 -printf '%M %g %p\\n'"])
    lines = listing.output.decode().splitlines()
    assert lines and all(line.split()[0][4:6] == "rw" and line.split()[1] == "root" for line in lines), lines
    uid = random.choice([u for u in range(10_000, 60_000, 7) if str(u) != first_uid])
    second = _serve_as(cpu_image[0], uid, cache_volume)
    try:
        assert second.docker.exec_run("id -u").output.decode().strip() == str(uid)
        assert _get(f"{second.url}/v1/models") == 401 and _get(f"{second.url}/v1/models", API_KEY) == 200
        assert second.docker.exec_run("dsv4-serve --ready").exit_code == 0  # the probe knows the key and the port
        assert _complete(second.url, API_KEY)["choices"][0]["text"]
        logs = second.logs()
        assert API_KEY not in logs and HF_TOKEN not in logs, "a secret reached the logs"
        assert "--api-key '***'" in logs
        assert re.search(rf"caches: warm for build {first.group(1)} \(first start ", logs), logs[-2000:]
    finally:
        stop(second.container)
    report["restart"] = {"uids": [int(first_uid), uid], "cold_start_to_healthy_s": round(mtp_server.start_to_healthy_s, 1),
                         "warm_start_to_healthy_s": round(second.start_to_healthy_s, 1),
                         "note": "cpu target runs eager: little is compiled, so cold and warm differ little"}


def _readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("## Run\n", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.replace("\\\n", " ").splitlines() if line.startswith("docker run ")]
    assert len(commands) >= 3
    return commands


def test_the_readme_run_commands_work_as_written(cpu_image, docker_client, report):
    """cpu commands run as written (until the server answers); GPU commands are created, not started (no GPU)."""
    for ref in ("ghcr.io/acme/dsv4-flash:cpu", "ghcr.io/acme/dsv4-flash:sm100", "ghcr.io/acme/dsv4-flash:sm120"):
        docker_client.images.get(cpu_image[0]).tag(ref)
    seconds = {}
    others = {c.id for c in docker_client.containers.list(all=True)}  # the session's shared servers among them

    def remove_ours():
        for c in docker_client.containers.list(all=True):
            if c.id not in others:
                c.remove(force=True)
    try:
        for command in _readme_commands():
            image = next(w for w in shlex.split(command.replace('"$(id -u)', '"0')) if w.startswith("ghcr.io/"))
            if not image.endswith(":cpu"):
                created = subprocess.run(["bash", "-c", command.replace("docker run ", "docker create ", 1)],
                                         capture_output=True, text=True, timeout=120)
                assert created.returncode == 0, (command, created.stderr)
                docker_client.containers.get(created.stdout.strip()).remove(force=True)
                continue
            started = time.monotonic()
            process = subprocess.Popen(["bash", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline and _get("http://127.0.0.1:8000/health") != 200:
                    assert process.poll() is None, f"{command} exited {process.returncode}"
                    time.sleep(2)
                assert client.served_model("http://127.0.0.1:8000") == "tiny-mtp", command
                seconds[command] = round(time.monotonic() - started, 1)
            finally:
                remove_ours()  # by id: an ancestor filter would also match the shared servers of the same image
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:  # the attached client outlived its container
                    process.kill()
                    process.wait(timeout=30)
    finally:
        for ref in ("ghcr.io/acme/dsv4-flash:cpu", "ghcr.io/acme/dsv4-flash:sm100", "ghcr.io/acme/dsv4-flash:sm120"):
            docker_client.images.remove(ref)
        for volume in docker_client.volumes.list(filters={"name": "dsv4-cache"}):
            if volume.name == "dsv4-cache":
                volume.remove(force=True)
    report["readme_run_commands_s"] = seconds
