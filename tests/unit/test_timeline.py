"""The test timeline `./dev test` prints: written phase by phase, so a run stopped from outside still has it."""

import os
import subprocess
import sys

from dsv4_images import REPO_ROOT


def test_a_slow_phase_and_a_failure_are_written_as_they_end_and_quick_passes_are_not(tmp_path):
    tests = tmp_path / "test_sample.py"
    tests.write_text("import time\n\n"
                     "def test_quick():\n    pass\n\n"
                     "def test_fails():\n    assert False\n\n"
                     "def test_slow(monkeypatch, tmp_path):\n    monkeypatch.chdir(tmp_path)\n    time.sleep(0.3)\n")
    timeline = tmp_path / "timeline.txt"  # relative to the run's first directory: the slow test leaves it
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.support.timeline",
                             "-o", "addopts=", "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "bt"), str(tests)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DSV4_TEST_TIMELINE": timeline.name, "DSV4_TEST_TIMELINE_MIN_S": "0.2",
                                 "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 1, result.stdout[-2000:]
    lines = [line for line in timeline.read_text().splitlines() if line.split()[-3] == "call"]  # a slow setup may add one
    assert [line.split()[-3:] for line in lines] == [["call", "failed", f"{tests.name}::test_fails"],
                                                     ["call", "passed", f"{tests.name}::test_slow"]], lines


def test_a_pytest_run_started_by_a_test_does_not_write_into_the_outer_run_s_timeline(tmp_path):
    """test_ci_workflow starts pytest runs that are meant to fail; their phases showed up in the unit run's
    timeline as failures of its own. The plugin takes the variable out of the environment it hands down."""
    outer = tmp_path / "test_outer.py"
    outer.write_text("import os, subprocess, sys\n\n"
                     "def test_starts_a_child():\n"
                     "    assert 'DSV4_TEST_TIMELINE' not in os.environ\n"
                     "    subprocess.run([sys.executable, '-c', 'import os; open(\"child.txt\", \"w\").write("
                     "os.environ.get(\"DSV4_TEST_TIMELINE\", \"unset\"))'], check=True)\n")
    timeline = tmp_path / "timeline.txt"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.support.timeline",
                             "-o", "addopts=", "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "bt"), str(outer)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DSV4_TEST_TIMELINE": str(timeline), "DSV4_TEST_TIMELINE_MIN_S": "0",
                                 "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "child.txt").read_text() == "unset"
    assert "test_outer.py::test_starts_a_child" in timeline.read_text()  # the outer run still writes its own
