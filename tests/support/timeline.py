"""A pytest plugin: with $DSV4_TEST_TIMELINE set (`./dev test` without arguments, as .ci/run calls it, sets it
for each of its two runs), one line per test phase that took 5 s or more ($DSV4_TEST_TIMELINE_MIN_S) or
failed, appended as the phase ends. When something outside stops a run with SIGTERM (CI's time limit), the
file still says where the time went and ./dev prints it; pytest's own --durations prints only at the end."""

from __future__ import annotations

import os
import time

_STARTED = time.monotonic()
# Resolved once, at start-up: tests change the working directory (monkeypatch.chdir). Taken out of the
# environment so that the pytest runs some tests start (test_ci_workflow's, expected to fail) do not write
# their phases into this run's timeline as if they were its own.
_PATH = os.path.abspath(os.environ["DSV4_TEST_TIMELINE"]) if os.environ.get("DSV4_TEST_TIMELINE") else None
os.environ.pop("DSV4_TEST_TIMELINE", None)
try:
    _THRESHOLD_S = float(os.environ.get("DSV4_TEST_TIMELINE_MIN_S") or 5)
except ValueError:  # a diagnostic's setting: a bad one falls back instead of failing the run
    _THRESHOLD_S = 5.0


def pytest_runtest_logreport(report):
    if not _PATH or getattr(report, "node", None) is not None:  # a worker's report relayed (xdist): written there
        return
    if report.duration >= _THRESHOLD_S or report.failed:
        try:
            with open(_PATH, "a") as out:
                out.write(f"{time.strftime('%H:%M:%S')} +{time.monotonic() - _STARTED:5.0f}s {report.duration:7.1f}s "
                          f"{report.when:8} {report.outcome:7} {report.nodeid}\n")
        except OSError:  # a diagnostic: it never fails the run
            pass
