"""The lifecycle every local server shares (`ChildProcessServer`), on a real child process."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from careloop_kit.infra.kafka import KafkaServer, KafkaStartError
from careloop_kit.infra.openbao import OpenBaoError, OpenBaoServer
from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.infra.process import ChildProcessServer, LocalServer


class Failed(RuntimeError):
    pass


class ScriptServer(ChildProcessServer):
    """A Python child that prints, then does what its script says; ready once a marker
    file exists."""

    label = "script"
    log_name = "script.log"
    start_error: ClassVar[type[Exception]] = Failed

    def __init__(self, data_dir: Path, script: str) -> None:
        super().__init__(data_dir)
        self.script = script

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        return [sys.executable, "-c", self.script]

    def _wait_ready(self, deadline: float) -> None:
        marker = self.data_dir / "ready"
        self._wait_until(
            lambda: None if marker.exists() else "no marker", deadline, "ready", interval=0.05
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


READY = (
    "import pathlib, time; print('up', flush=True); pathlib.Path('ready').touch(); time.sleep(60)"
)


def test_a_ready_server_runs_until_stopped(tmp_path: Path) -> None:
    with ScriptServer(tmp_path / "s", READY) as server:
        assert server.is_running
        pid = server.pid
        assert pid is not None
    assert not server.is_running
    assert server.pid is None
    assert not _alive(pid)
    assert "=== careloop: starting script" in server.log_tail()
    assert "up" in server.log_tail()


def test_starting_a_running_server_again_keeps_its_process(tmp_path: Path) -> None:
    with ScriptServer(tmp_path / "s", READY) as server:
        pid = server.pid
        server.start()
        assert server.pid == pid


def test_a_server_that_exits_during_start_up_says_so_with_its_log(tmp_path: Path) -> None:
    server = ScriptServer(tmp_path / "s", "print('bad config', flush=True); raise SystemExit(3)")
    with pytest.raises(Failed, match=r"script exited with code 3 during start-up(.|\n)*bad config"):
        server.start(timeout=30)
    assert not server.is_running


def test_a_server_that_never_gets_ready_is_killed(tmp_path: Path) -> None:
    server = ScriptServer(tmp_path / "s", "import time; time.sleep(60)")
    with pytest.raises(Failed, match="did not get ready in time"):
        server.start(timeout=1)
    assert server.pid is None  # killed: nothing left running


def test_the_three_servers_share_the_lifecycle() -> None:
    assert issubclass(KafkaServer, ChildProcessServer)
    assert issubclass(OpenBaoServer, ChildProcessServer)
    assert issubclass(PostgresServer, LocalServer)
    assert KafkaServer.start_error is KafkaStartError
    assert OpenBaoServer.start_error is OpenBaoError
