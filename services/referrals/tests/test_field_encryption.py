"""Referral reasons go through the kit's field port: envelope encryption under the
referrals transit key. After the key is rotated, `careloop keys rewrap referrals`
rewraps every data key, so the old versions can be retired and every reason still
reads."""

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
from careloop_contracts.platform import REFERRALS_FIELDS_KEY
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.db import make_engine, make_sessionmaker
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import Mint
from careloop_referrals.app import create_app
from careloop_referrals.settings import ReferralsSettings
from careloop_referrals.store.tables import field_key

from .test_referrals_api import REASON, VALID_NPIS, _directory_entry, _move, _referral

pytestmark = pytest.mark.service


@pytest.fixture
def referrals_key(vault_addr: str, vault_root_token: str) -> Iterator[hvac.Client]:
    """The shared referrals transit key, left accepting every version again afterwards
    so the data keys other tests wrapped stay readable."""
    root = hvac.Client(url=vault_addr, token=vault_root_token)
    yield root
    root.secrets.transit.update_key_configuration(
        name=REFERRALS_FIELDS_KEY, min_decryption_version=1
    )


async def test_rotation_rewrap_and_retirement_keep_every_reason_readable(
    referrals_app: FastAPI,
    referrals_settings: ReferralsSettings,
    referrals_key: hvac.Client,
    mint: Mint,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    async with running_app(referrals_app) as client:
        referrer = await _directory_entry(client, mint(), VALID_NPIS[0])
        created = await _referral(client, mint(), referrer)
        declined = await _move(client, mint(), created["id"], "declined", reason="Out of scope")
        assert declined.status_code == 200, declined.text

    referrals_key.secrets.transit.rotate_key(name=REFERRALS_FIELDS_KEY)
    latest = referrals_key.secrets.transit.read_key(name=REFERRALS_FIELDS_KEY)["data"][
        "latest_version"
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")} | {
        "CARELOOP_STATE_DIR": str(tmp_path),
        "CARELOOP_DATABASE_URL": referrals_settings.database_url.get_secret_value(),
        "CARELOOP_VAULT_ADDR": referrals_settings.vault_addr,
        "CARELOOP_VAULT_TOKEN": referrals_settings.vault_token.get_secret_value(),
    }
    run = await asyncio.to_thread(
        CliRunner().invoke, cli, ["keys", "rewrap", "referrals", "--batch-size", "1"], env=env
    )
    assert run.exit_code == 0, run.output
    engine = make_engine(referrals_settings.database_url.get_secret_value(), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            wrapped = list(await session.scalars(select(field_key.c.wrapped)))
    finally:
        await engine.dispose()
    assert wrapped
    assert all(w.startswith(f"vault:v{latest}:") for w in wrapped)
    assert f"{len(wrapped)} rewrapped" in run.output

    rerun = await asyncio.to_thread(
        CliRunner().invoke, cli, ["keys", "rewrap", "referrals"], env=env
    )
    assert rerun.exit_code == 0, rerun.output
    assert f"0 rewrapped, {len(wrapped)} already current" in rerun.output

    # Older versions retired: a fresh process still reads every reason.
    referrals_key.secrets.transit.update_key_configuration(
        name=REFERRALS_FIELDS_KEY, min_decryption_version=latest
    )
    again = create_app(referrals_settings, clock=clock, jwks=issuer.jwks)
    async with running_app(again) as client:
        read = await client.get(f"/referrals/{created['id']}", headers=mint())
    assert read.status_code == 200, read.text
    body = read.json()
    assert body["reason"] == REASON
    assert body["history"][-1]["reason"] == "Out of scope"
