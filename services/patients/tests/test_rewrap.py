"""After the PHI transit key is rotated, `careloop keys rewrap-phi` moves every stored data
key to the latest version, so the old versions can be retired and every record still reads."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import hvac
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from careloop_cli.main import app as cli
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.db import make_engine
from careloop_kit.testing.apps import running_app
from careloop_patients.app import create_app
from careloop_patients.settings import PatientsSettings
from careloop_patients.store.tables import patient_key

pytestmark = pytest.mark.service


async def stored_versions(settings: PatientsSettings) -> list[str]:
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1)
    try:
        async with engine.connect() as connection:
            wrapped = await connection.scalars(select(patient_key.c.wrapped))
            return sorted(w.split(":")[1] for w in wrapped)
    finally:
        await engine.dispose()


async def test_rewrap_moves_every_data_key_to_the_latest_version(
    patients_settings: PatientsSettings,
    vault_root_token: str,
    issuer: TestTokenIssuer,
    org: dict[str, str],
    patient_body: Callable[..., dict[str, object]],
    unique_id: str,
    tmp_path: Path,
) -> None:
    # A key of this test's own: rotating the shared one would reach every other test.
    key_name = f"careloop-phi-{unique_id}"
    root = hvac.Client(url=patients_settings.vault_addr, token=vault_root_token)
    root.secrets.transit.create_key(name=key_name, key_type="aes256-gcm96")
    settings = patients_settings.model_copy(
        update={"phi_transit_key": key_name, "vault_token": SecretStr(vault_root_token)}
    )
    jwks = StaticJwksSource(issuer.jwks_document())
    async with running_app(create_app(settings, jwks=jwks)) as client:
        ids = []
        for n in range(3):
            created = await client.post(
                "/patients", json=patient_body(f"{unique_id}r{n}"), headers=org
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
    assert await stored_versions(settings) == ["v1"] * 3

    root.secrets.transit.rotate_key(name=key_name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")} | {
        "CARELOOP_STATE_DIR": str(tmp_path),
        "CARELOOP_DATABASE_URL": settings.database_url.get_secret_value(),
        "CARELOOP_VAULT_ADDR": settings.vault_addr,
        "CARELOOP_VAULT_TOKEN": vault_root_token,
        "CARELOOP_PHI_TRANSIT_KEY": key_name,
    }
    first = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "rewrap-phi"], env=env)
    assert first.exit_code == 0, first.output
    assert "3 rewrapped, 0 already current" in first.output
    assert await stored_versions(settings) == ["v2"] * 3

    again = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "rewrap-phi"], env=env)
    assert "0 rewrapped, 3 already current" in again.output

    # Version 1 retired: a fresh process (no cached data keys) still reads every record.
    root.secrets.transit.update_key_configuration(name=key_name, min_decryption_version=2)
    async with running_app(create_app(settings, jwks=jwks)) as client:
        for patient_id in ids:
            read = await client.get(f"/patients/{patient_id}", headers=org)
            assert read.status_code == 200, read.text
            assert read.json()["name"]["family"].startswith(f"Fam{unique_id}r")
