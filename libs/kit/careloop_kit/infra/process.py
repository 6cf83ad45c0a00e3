"""The lifecycle of the servers the local stack starts (Kafka, OpenBao, PostgreSQL):
one base class, and stopping child processes each in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Self


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


class LocalServer(ABC):
    """What every local server does the same way: start once and return when it is
    ready (cleaning up if it is not), stop, kill, and serve as a context manager.

    Subclasses supply `_prepare` (files to write before launch), `_launch`, `_wait_ready`,
    `is_running`, `stop` and `kill`.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()

    @property
    @abstractmethod
    def is_running(self) -> bool:
        """Whether the server is up (as far as this object knows)."""

    def start(self, timeout: float = 60) -> None:
        """Start the server and return once it is ready; a server that fails to come up
        is killed, so nothing is left running."""
        if self.is_running:
            return
        self._prepare()
        self._launch()
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.kill()
            raise

    def _prepare(self) -> None:
        """Write what the server reads at start-up (configuration, storage)."""
        return None

    @abstractmethod
    def _launch(self) -> None:
        """Start the server process."""

    def _wait_ready(self, deadline: float) -> None:
        """Return once the server serves requests; raise when `deadline` passes."""
        return None

    @abstractmethod
    def stop(self, timeout: float = 20) -> None:
        """Controlled shutdown."""

    @abstractmethod
    def kill(self) -> None:
        """Stop at once, as a crash would; the data stays in `data_dir`."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ChildProcessServer(LocalServer):
    """A server run as a child process in its own process group, logging to a file in
    `data_dir`. Subclasses give the command line, the log file name and how to tell
    that the server is ready."""

    label: ClassVar[str]
    """How the server is named in errors and in its log (`kafka`, `openbao`)."""
    log_name: ClassVar[str]
    """The log file, inside `data_dir`."""
    start_error: ClassVar[type[Exception]] = RuntimeError
    """What a failed start raises."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / self.log_name

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @abstractmethod
    def _command(self) -> list[str]:
        """The server's command line."""

    def _environment(self) -> dict[str, str] | None:
        """The server's environment (None: this process's)."""
        return None

    def _launch(self) -> None:
        with self.log_file.open("ab") as log:
            log.write(f"\n=== careloop: starting {self.label} at {time.ctime()} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._environment(),
                start_new_session=True,
            )

    def _wait_until(
        self, not_ready: Callable[[], str | None], deadline: float, what: str, interval: float
    ) -> None:
        """Poll `not_ready` (None when ready, else why not) until `deadline`; raise
        `start_error` with the log's tail if the process exits or time runs out."""
        reason = "no answer yet"
        while time.monotonic() < deadline:
            if not self.is_running:
                code = self._proc.returncode if self._proc is not None else "?"
                raise self.start_error(
                    f"{self.label} exited with code {code} during start-up; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            found = not_ready()
            if found is None:
                return
            reason = found
            time.sleep(interval)
        raise self.start_error(
            f"{self.label} did not get {what} in time ({reason}); "
            f"last lines of {self.log_file}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 60) -> str:
        """The last `lines` lines of the server's log."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL if still alive after `timeout` seconds."""
        if self._proc is not None:
            stop_group(self._proc, timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would."""
        if self._proc is not None:
            kill_group(self._proc)
            self._proc = None
