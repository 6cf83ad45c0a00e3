"""Task notes and comments go through the kit's field port: envelope encryption under the
tasks transit key. After the key is rotated, `careloop keys rewrap tasks` rewraps every
data key, so the old versions can be retired and every comment still reads."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from careloop_cli.main import app as cli
from careloop_contracts.platform import TASKS_FIELDS_KEY
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.db import make_engine, make_sessionmaker
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import Mint
from careloop_tasks.app import create_app
from careloop_tasks.settings import TasksSettings
from careloop_tasks.store.tables import field_key

from .test_worklist import COMMENT, _task

pytestmark = pytest.mark.service


@pytest.fixture
def tasks_key(vault_addr: str, vault_root_token: str) -> Iterator[hvac.Client]:
    """The shared tasks transit key, left accepting every version again afterwards so
    the data keys other tests wrapped stay readable."""
    root = hvac.Client(url=vault_addr, token=vault_root_token)
    yield root
    root.secrets.transit.update_key_configuration(name=TASKS_FIELDS_KEY, min_decryption_version=1)


async def test_rotation_rewrap_and_retirement_keep_every_comment_readable(
    tasks_app: FastAPI,
    tasks_settings: TasksSettings,
    tasks_key: hvac.Client,
    mint: Mint,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    async with running_app(tasks_app) as client:
        created = await _task(client, mint(), note="Call back about the results")
        commented = await client.post(
            f"/tasks/{created['id']}/comments", json={"body": COMMENT}, headers=mint()
        )
        assert commented.status_code == 201, commented.text

    tasks_key.secrets.transit.rotate_key(name=TASKS_FIELDS_KEY)
    latest = tasks_key.secrets.transit.read_key(name=TASKS_FIELDS_KEY)["data"]["latest_version"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")} | {
        "CARELOOP_STATE_DIR": str(tmp_path),
        "CARELOOP_DATABASE_URL": tasks_settings.database_url.get_secret_value(),
        "CARELOOP_VAULT_ADDR": tasks_settings.vault_addr,
        "CARELOOP_VAULT_TOKEN": tasks_settings.vault_token.get_secret_value(),
    }
    run = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "rewrap", "tasks"], env=env)
    assert run.exit_code == 0, run.output
    engine = make_engine(tasks_settings.database_url.get_secret_value(), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            wrapped = list(await session.scalars(select(field_key.c.wrapped)))
    finally:
        await engine.dispose()
    assert wrapped
    assert all(w.startswith(f"vault:v{latest}:") for w in wrapped)
    assert f"{len(wrapped)} rewrapped" in run.output

    # Older versions retired: a fresh process still reads the note and the comment.
    tasks_key.secrets.transit.update_key_configuration(
        name=TASKS_FIELDS_KEY, min_decryption_version=latest
    )
    again = create_app(tasks_settings, clock=clock, jwks=issuer.jwks)
    async with running_app(again) as client:
        read = await client.get(f"/tasks/{created['id']}", headers=mint())
    assert read.status_code == 200, read.text
    assert read.json()["note"] == "Call back about the results"
    assert [c["body"] for c in read.json()["comments"]] == [COMMENT]
