"""Stopping the server processes the local stack starts, each in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send `sig` to the process's whole group (the server and anything it spawned)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if still alive after `timeout` seconds; nothing is left over."""
    if process.poll() is None:
        signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait(10)
    signal_group(process, signal.SIGKILL)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL at once, as a crash would."""
    signal_group(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
