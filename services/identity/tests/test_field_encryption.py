"""Identity's encrypted fields (TOTP secrets, break-glass reasons) go through the kit's
port: envelope encryption under identity's transit key. Ciphertexts from before the port
(one fixed key) are moved onto it by `careloop keys rewrap identity`, which also rewraps
every data key after a rotation, so the old transit versions can be retired."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import hvac
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from careloop_cli.main import app as cli
from careloop_contracts.platform import IDENTITY_FIELDS_KEY
from careloop_identity.app import create_app
from careloop_identity.settings import IdentitySettings
from careloop_identity.store.tables import break_glass_grant, field_key, user_account
from careloop_identity.usecases.common import LEGACY_FIELD_KEY_ID, field_cipher
from careloop_kit.auth import totp
from careloop_kit.clock import FrozenClock
from careloop_kit.crypto import FieldContext, encrypt_field
from careloop_kit.db import make_engine, make_sessionmaker
from careloop_kit.testing.apps import running_app
from careloop_kit.vault import Vault

from .test_break_glass import REASON, break_glass
from .test_service import login, make_account

pytestmark = pytest.mark.service


@pytest.fixture
def identity_key(vault_addr: str, vault_root_token: str) -> Iterator[hvac.Client]:
    """The shared identity transit key, left accepting every version again afterwards so
    the data keys other tests wrapped stay readable."""
    root = hvac.Client(url=vault_addr, token=vault_root_token)
    yield root
    root.secrets.transit.update_key_configuration(
        name=IDENTITY_FIELDS_KEY, min_decryption_version=1
    )


async def _raw(settings: IdentitySettings, sql: str, **params: object) -> list[object]:
    engine = create_async_engine(settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


async def test_rotation_rewrap_and_retirement_keep_every_field_readable(
    identity_settings: IdentitySettings,
    identity_key: hvac.Client,
    vault_root_token: str,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    vault = Vault.from_settings(identity_settings)
    legacy_key = base64.b64decode(
        (await vault.read_secret(identity_settings.totp_key_secret_path))["key"]
    )
    async with running_app(create_app(identity_settings, clock=clock)) as client:
        account = await make_account(client, ["provider"], clock=clock)
        first = (await login(client, account)).json()
        bearer = {"Authorization": f"Bearer {first['access_token']}"}
        enrolled = await client.post("/auth/mfa/enroll", headers=bearer)
        secret_b32 = enrolled.json()["secret"]
        secret = totp.from_base32(secret_b32)
        code = totp.totp(secret, clock.now())
        verified = await client.post("/auth/mfa/verify", json={"code": code}, headers=bearer)
        assert verified.is_success, verified.text
        clock.advance(timedelta(seconds=30))
        tokens = (await login(client, account, otp=totp.totp(secret, clock.now()))).json()
        granted = await break_glass(client, tokens["access_token"])
        assert granted.status_code == 201, granted.text
        grant_id = granted.json()["grant_id"]

    # What is stored: only ciphertext that names its data key, never the values.
    (user_row,) = await _raw(
        identity_settings,
        "SELECT totp_secret_ct FROM user_account WHERE id = :id",
        id=account.user_id,
    )
    (grant_row,) = await _raw(
        identity_settings, "SELECT reason_ct FROM break_glass_grant WHERE id = :id", id=grant_id
    )
    sealed_secret, sealed_reason = bytes(user_row[0]), bytes(grant_row[0])  # type: ignore[index]
    assert sealed_secret[:1] == sealed_reason[:1] == b"\x02"
    assert secret_b32.encode() not in sealed_secret
    assert REASON.encode() not in sealed_reason

    # A ciphertext from before the port (the fixed key) is still read through it ...
    legacy = encrypt_field(
        legacy_key,
        secret_b32,
        FieldContext(
            account.org_id, "user_account", "totp_secret", account.user_id, LEGACY_FIELD_KEY_ID
        ),
    )
    engine = make_engine(identity_settings.database_url.get_secret_value(), pool_size=1)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions.begin() as session:
            await session.execute(
                update(user_account)
                .where(user_account.c.id == account.user_id)
                .values(totp_secret_ct=legacy)
            )
        async with running_app(create_app(identity_settings, clock=clock)) as client:
            clock.advance(timedelta(seconds=30))
            again = await login(client, account, otp=totp.totp(secret, clock.now()))
            assert again.status_code == 200, again.text

        # ... then the transit key is rotated and the command rewraps and moves everything.
        identity_key.secrets.transit.rotate_key(name=IDENTITY_FIELDS_KEY)
        latest = identity_key.secrets.transit.read_key(name=IDENTITY_FIELDS_KEY)["data"][
            "latest_version"
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")} | {
            "CARELOOP_STATE_DIR": str(tmp_path),
            "CARELOOP_DATABASE_URL": identity_settings.database_url.get_secret_value(),
            "CARELOOP_VAULT_ADDR": identity_settings.vault_addr,
            "CARELOOP_VAULT_TOKEN": identity_settings.vault_token.get_secret_value(),
        }
        run = await asyncio.to_thread(
            CliRunner().invoke, cli, ["keys", "rewrap", "identity", "--batch-size", "1"], env=env
        )
        assert run.exit_code == 0, run.output
        assert "1 moved onto data keys" in run.output
        async with sessions() as session:
            wrapped = list(await session.scalars(select(field_key.c.wrapped)))
            moved = await session.scalar(
                select(user_account.c.totp_secret_ct).where(user_account.c.id == account.user_id)
            )
        assert wrapped
        assert all(w.startswith(f"vault:v{latest}:") for w in wrapped)
        assert moved is not None
        assert bytes(moved)[:1] == b"\x02"
        assert f"{len(wrapped)} rewrapped" in run.output

        rerun = await asyncio.to_thread(
            CliRunner().invoke, cli, ["keys", "rewrap", "identity"], env=env
        )
        assert rerun.exit_code == 0, rerun.output
        assert f"0 rewrapped, {len(wrapped)} already current" in rerun.output

        # Older versions retired: a fresh process reads every field, without the fixed key.
        identity_key.secrets.transit.update_key_configuration(
            name=IDENTITY_FIELDS_KEY, min_decryption_version=latest
        )
        async with running_app(create_app(identity_settings, clock=clock)) as client:
            clock.advance(timedelta(seconds=30))
            after = await login(client, account, otp=totp.totp(secret, clock.now()))
            assert after.status_code == 200, after.text
            assert after.json()["access_token"]
        port = field_cipher(vault, None)
        async with sessions() as session:
            reason_ct = await session.scalar(
                select(break_glass_grant.c.reason_ct).where(break_glass_grant.c.id == grant_id)
            )
            assert reason_ct is not None
            reason = await port.open_field(
                session,
                bytes(reason_ct),
                org_id=account.org_id,
                table="break_glass_grant",
                column="reason_ct",
                row_id=grant_id,
            )
            assert reason == REASON
            secret_ct = await session.scalar(
                select(user_account.c.totp_secret_ct).where(user_account.c.id == account.user_id)
            )
            assert secret_ct is not None
            opened = await port.open_field(
                session,
                bytes(secret_ct),
                org_id=account.org_id,
                table="user_account",
                column="totp_secret",
                row_id=account.user_id,
            )
            assert opened == secret_b32
    finally:
        await engine.dispose()
