"""Rotating the blind-index master key: new writes are indexed under the new version,
lookups try both versions until `careloop keys reindex patients` has moved every row, then
the old key is retired and every patient is still found."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import hvac
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from careloop_cli.main import app as cli
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.crypto import BlindIndexer, KeyRing
from careloop_kit.db import make_engine, make_sessionmaker
from careloop_kit.testing.apps import running_app
from careloop_kit.vault import Vault
from careloop_patients.app import create_app
from careloop_patients.domain.patient import SearchKey, name_birth_key
from careloop_patients.settings import PatientsSettings
from careloop_patients.store.repository import PatientRepository
from careloop_patients.store.tables import patient_lookup

pytestmark = pytest.mark.service

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))


async def test_lookups_span_both_versions_until_the_reindex_and_then_only_the_new_one(
    patients_settings: PatientsSettings,
    vault_root_token: str,
    issuer: TestTokenIssuer,
    org: dict[str, str],
    patient_body: Callable[..., dict[str, object]],
    unique_id: str,
    tmp_path: Path,
) -> None:
    # A secret of this test's own, so rotating it reaches no other test.
    path = f"careloop/patients/blind-index-{unique_id}"
    root = hvac.Client(url=patients_settings.vault_addr, token=vault_root_token)
    root.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"key": base64.b64encode(OLD_KEY).decode()}, mount_point="secret"
    )
    settings = patients_settings.model_copy(
        update={"blind_index_secret_path": path, "vault_token": SecretStr(vault_root_token)}
    )
    org_id = f"org-{unique_id}"
    jwks = StaticJwksSource(issuer.jwks_document())
    async with running_app(create_app(settings, jwks=jwks)) as client:
        old_ids = []
        for n in range(3):
            created = await client.post(
                "/patients", json=patient_body(f"{unique_id}o{n}"), headers=org
            )
            assert created.status_code == 201, created.text
            old_ids.append(created.json()["id"])

    # Rotation: the secret names the new key and keeps the old one as `previous_key`.
    rotated = {
        "key": base64.b64encode(NEW_KEY).decode(),
        "version": "2",
        "previous_key": base64.b64encode(OLD_KEY).decode(),
        "previous_version": "1",
    }
    root.secrets.kv.v2.create_or_update_secret(path=path, secret=rotated, mount_point="secret")
    both = BlindIndexer.from_secret(rotated)
    only_new = BlindIndexer(NEW_KEY, version=2)
    assert both.versions == (2, 1)

    vault = Vault.from_settings(settings)
    keys = KeyRing(vault, settings.phi_transit_key)
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1)
    sessions = make_sessionmaker(engine)

    def key_of(marker: str) -> SearchKey:
        return name_birth_key(f"Fam{marker}", f"Giv{marker}", date(1980, 4, 2))

    async def found(indexer: BlindIndexer, marker: str) -> list[str]:
        async with sessions() as session:
            repo = PatientRepository(session, keys, indexer)
            return [p.id for p in await repo.find(org_id, [key_of(marker)], limit=5)]

    async def versions() -> list[int]:
        async with sessions() as session:
            return sorted(set(await session.scalars(select(patient_lookup.c.index_version))))

    try:
        # A write after the rotation is indexed under version 2 only ...
        async with sessions.begin() as session:
            twin = await PatientRepository(session, keys, both).get(org_id, old_ids[0])
            assert twin is not None
            fresh = await PatientRepository(session, keys, both).add(
                org_id=org_id, location_id="loc-north", details=twin.details, now=datetime.now(UTC)
            )
        assert await versions() == [1, 2]
        # ... and a lookup finds old and new rows while both versions are held,
        assert await found(both, f"{unique_id}o0") == [old_ids[0], fresh.id]
        # which the new key alone would not (that is why the old one is kept until then).
        assert await found(only_new, f"{unique_id}o0") == [fresh.id]

        env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")} | {
            "CARELOOP_STATE_DIR": str(tmp_path),
            "CARELOOP_DATABASE_URL": settings.database_url.get_secret_value(),
            "CARELOOP_VAULT_ADDR": settings.vault_addr,
            "CARELOOP_VAULT_TOKEN": vault_root_token,
            "CARELOOP_BLIND_INDEX_SECRET_PATH": path,
        }
        run = await asyncio.to_thread(
            CliRunner().invoke, cli, ["keys", "reindex", "patients", "--batch-size", "2"], env=env
        )
        assert run.exit_code == 0, run.output
        assert "3 re-indexed, 0 rows left under older versions" in run.output
        assert await versions() == [2]
        again = await asyncio.to_thread(
            CliRunner().invoke, cli, ["keys", "reindex", "patients"], env=env
        )
        assert again.exit_code == 0, again.output
        assert "0 re-indexed" in again.output

        # The old key retired: the new one alone finds every patient.
        for n, patient_id in enumerate(old_ids):
            hits = set(await found(only_new, f"{unique_id}o{n}"))
            assert patient_id in hits
        assert set(await found(only_new, f"{unique_id}o0")) == {old_ids[0], fresh.id}
    finally:
        await engine.dispose()
