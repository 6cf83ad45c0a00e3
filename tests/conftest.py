"""Session-wide concerns of the test tree: the order files start in, and the end-to-end
log scan's verdict.

Order: the crash tests and the end-to-end tests run first. Each of their files takes
from seconds to minutes (the dev stack test alone several), and pytest-xdist hands out
whole files in collection order, so started last they would leave one worker running
them while the other idles; started first, the short files fill in around them.

The e2e suite's log scan (`tests/e2e/conftest.py`) runs in every process that runs e2e
tests; under pytest-xdist those are workers, whose own summary nobody sees and whose exit
status does not fail the run. Each process therefore hands its scan to the plugin
registered here as `LOG_SCAN_PLUGIN` (a worker through its xdist `workeroutput`), and the
process that reports the run prints one summary over all of them and fails the session
when any line held PHI.
"""

from __future__ import annotations

from typing import Any

import pytest

SLOW_FIRST = ("crash", "e2e")
"""Markers of the tests that start first, in this order (stable within each group)."""

LOG_SCAN_PLUGIN = "careloop-log-scan-report"
WORKER_OUTPUT_KEY = "careloop_log_scan"


class LogScanReport:
    """The log scans of this run, and the summary over them."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._scans: list[dict[str, Any]] = []

    def add(self, scan: dict[str, Any]) -> None:
        """One process's scan: in a worker it travels to the controller."""
        worker_output = getattr(self._config, "workeroutput", None)
        if worker_output is not None:
            worker_output[WORKER_OUTPUT_KEY] = scan
        else:
            self._scans.append(scan)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        scan = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if scan is not None:
            self._scans.append(scan)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput") or not self._scans:
            return
        scans = self._scans
        lines = sum(s["lines"] for s in scans)
        subprocess_lines = sum(s["subprocess_lines"] for s in scans)
        commands = {c for s in scans for c in s["commands"]}
        leaks = [leak for s in scans for leak in s["leaks"]]
        summary = (
            f"log scan: {lines} lines ({lines - subprocess_lines} log records, "
            f"{subprocess_lines} lines of {len(commands)} subprocess commands) checked against "
            f"{sum(s['values'] for s in scans)} PHI values of "
            f"{sum(s['patients'] for s in scans)} patient writes in {len(scans)} "
            f"{'processes' if len(scans) > 1 else 'process'}: "
            + (f"{len(leaks)} leaks" if leaks else "no PHI found")
        )
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        write = reporter.write_line if reporter is not None else print
        write("")
        write(summary)
        for leak in leaks[:50]:
            write(f"  {leak}")
        if leaks:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(LogScanReport(config), LOG_SCAN_PLUGIN)


def _start_rank(item: pytest.Item) -> int:
    for rank, marker in enumerate(SLOW_FIRST):
        if item.get_closest_marker(marker) is not None:
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_start_rank)
