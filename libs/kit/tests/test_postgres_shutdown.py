"""PostgreSQL stops the way it is asked to: `stop()` cleanly (a checkpoint), `kill()` at
once, as a crash would (the next start recovers from the WAL). The test session ends its
servers with `kill()`, so that it does not wait for a checkpoint over every database it
made."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from careloop_kit.infra.postgres import PostgresServer


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    # Not pytest's tmp_path: PostgreSQL runs as its own system user and must traverse it.
    base = Path(tempfile.mkdtemp(prefix="careloop-pg-shutdown-"))
    base.chmod(0o755)
    server = PostgresServer(base / "pg")
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(base, ignore_errors=True)


def cluster_state(server: PostgresServer) -> str:
    shown = subprocess.run(
        [str(server.bin("pg_controldata")), "-D", str(server.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    found = re.search(r"^Database cluster state:\s+(.+)$", shown, re.MULTILINE)
    assert found, shown
    return found.group(1).strip()


def test_stop_checkpoints_and_kill_does_not(server: PostgresServer) -> None:
    server.start()
    server.stop()
    assert cluster_state(server) == "shut down"
    assert not server.is_running

    server.start()
    server.kill()
    assert cluster_state(server) == "in production"
    assert not server.is_running

    server.start()  # recovers from the WAL
    assert server.is_running
