"""What a service's tests need besides the servers: its settings against the session's
Kafka, PostgreSQL and OpenBao, and access tokens its app trusts.

The plugin (:mod:`careloop_kit.testing.plugin`) serves these as the fixtures
``service_settings``, ``clock``, ``issuer`` and ``mint``; a service's conftest overrides
``clock`` when its tests move time.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.settings import KitSettings

if TYPE_CHECKING:
    from careloop_kit.infra.postgres import PostgresServer

SettingsT = TypeVar("SettingsT", bound=KitSettings)

Mint = Callable[..., dict[str, str]]
"""``mint(roles=[...], loc=[...])``: headers with a fresh access token of these claims."""


def migrations_of(service: str) -> Path:
    """The Alembic folder of `service`'s package (`careloop_<service>/migrations`)."""
    spec = importlib.util.find_spec(f"careloop_{service}")
    if spec is None or spec.origin is None:
        raise LookupError(f"no package careloop_{service} is installed")
    return Path(spec.origin).parent / "migrations"


class ServiceSettingsFactory:
    """``await service_settings(PatientsSettings, "patients", topic_prefix=...)``: the
    service's settings for a test, in a fresh database of its own (owned by a role of its
    own, migrated to head), on the session's broker, with the service's own Vault token.

    Each call makes a new database (see `database`); `topic_prefix` defaults to a fresh
    one, so a module fixture that calls it shares nothing with other modules. `overrides`
    set any other field (a poll interval, a delivery mode).
    """

    def __init__(
        self,
        postgres_server: PostgresServer,
        kafka_bootstrap: str,
        vault_addr: str,
        vault_tokens: dict[str, str],
    ) -> None:
        self._postgres = postgres_server
        self._kafka_bootstrap = kafka_bootstrap
        self._vault_addr = vault_addr
        self._vault_tokens = vault_tokens
        self._templates: dict[str, tuple[str, str]] = {}

    async def database(self, service: str) -> str:
        """A fresh database for `service`, at its migrations' head; its DSN.

        Copied from a template that the migrations ran on once this session: a copy takes
        a fraction of a second, the migrations seconds, and most service tests start with
        a database of their own. The copy's objects are handed to its own role, so it is
        what migrating it would have made."""
        template, template_role = await self._template(service)
        name = f"{service.replace('-', '_')}_{uuid.uuid4().hex[:10]}"
        password = uuid.uuid4().hex
        await self._postgres.create_database(name, owner=name, password=password, template=template)
        conn = await asyncpg.connect(self._postgres.libpq_uri(name))
        try:
            await conn.execute(f'REASSIGN OWNED BY "{template_role}" TO "{name}"')
        finally:
            await conn.close()
        return self._postgres.dsn_for(name, name, password)

    async def _template(self, service: str) -> tuple[str, str]:
        """The migrated template database of `service` and the role owning its objects."""
        if service not in self._templates:
            name = f"{service.replace('-', '_')}_template_{uuid.uuid4().hex[:10]}"
            password = uuid.uuid4().hex
            await self._postgres.create_database(name, owner=name, password=password)
            dsn = self._postgres.dsn_for(name, name, password)
            await upgrade_async(migrations_of(service), dsn)
            conn = await asyncpg.connect(self._postgres.libpq_uri())
            try:
                # Its role keeps only the objects inside, which each copy hands on; owning
                # the template database itself would hand that to the first copy's role.
                await conn.execute(f'ALTER DATABASE "{name}" OWNER TO CURRENT_USER')
            finally:
                await conn.close()
            self._templates[service] = (name, name)
        return self._templates[service]

    async def __call__(
        self,
        settings_type: type[SettingsT],
        service: str,
        *,
        topic_prefix: str | None = None,
        database_url: str | None = None,
        **overrides: Any,
    ) -> SettingsT:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": database_url or await self.database(service),
            "kafka_bootstrap": self._kafka_bootstrap,
            "vault_addr": self._vault_addr,
            "vault_token": self._vault_tokens[service],
            "topic_prefix": topic_prefix or f"t{uuid.uuid4().hex[:10]}.",
            "log_json": False,
        }
        values.update(overrides)
        return settings_type(**values)


def token_minter(issuer: TestTokenIssuer, unique_id: str) -> Mint:
    """Headers for tokens of the organization `org-<unique_id>`; the defaults are an org
    admin of every location who signed in with a one-time code."""

    def mint(**claims: object) -> dict[str, str]:
        values: dict[str, Any] = {
            "org": f"org-{unique_id}",
            "sub": f"user-{unique_id}",
            "sid": f"session-{unique_id}",
            "roles": ["org_admin"],
            "loc": ["*"],
            "amr": ["pwd", "otp"],
        }
        values.update(claims)
        return {"Authorization": f"Bearer {issuer.mint(**values)}"}

    return mint
