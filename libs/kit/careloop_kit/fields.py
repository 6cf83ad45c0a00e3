"""The field-encryption port: the one way a service seals and opens PHI at rest.

Envelope encryption: every field is AES-256-GCM under a data key (DEK); each DEK is made by
the service's Vault transit key, stored only wrapped in the service's key table (the same
shape in every service, see `add_field_key_table`) and unwrapped on demand into a cache.
The associated data binds a ciphertext to its tenant, table, column, row and DEK, so a
value copied to another row or column does not decrypt.

Two ways to name the DEK of a field:

* `seal` / `open` with a `DataKey` the caller keeps next to the row (patients keep one DEK
  per record, named by `patient.dek_id`);
* `seal_field` / `open_field`, whose ciphertext carries its DEK id (format 2), for services
  that keep no key column: one current DEK per tenant, found or made on first use.

After the transit key is rotated, `rewrap_data_keys` moves every stored DEK to the latest
version without any plaintext leaving Vault; then the old versions can be retired with
`min_decryption_version`. Ciphertexts from before the port (format 1 under one fixed key)
open only while a `LegacyKey` is configured, and `reseal_legacy` moves them onto the port.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import sqlalchemy as sa
from sqlalchemy import Column, DateTime, MetaData, Row, String, Table, Text, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careloop_kit.crypto import (
    CIPHERTEXT_VERSION,
    DecryptionFailed,
    FieldContext,
    KeyRing,
    WrappedKey,
    decrypt_bytes,
    decrypt_field,
    encrypt_bytes,
    encrypt_field,
)
from careloop_kit.db.batches import BatchRows, for_each_batch
from careloop_kit.db.engine import make_engine, make_sessionmaker
from careloop_kit.settings import KitSettings
from careloop_kit.vault import Vault

__all__ = [
    "FIELD_KEY_TABLE",
    "DataKey",
    "DecryptionFailed",
    "FieldCipher",
    "LegacyKey",
    "RewrapReport",
    "SealedColumn",
    "add_field_key_table",
    "create_field_key_table_v1",
    "drop_field_key_table_v1",
    "reseal_legacy",
    "rewrap_data_keys",
    "rotate_fields",
]

FIELD_KEY_TABLE = "field_key"
SELF_DESCRIBING_VERSION = b"\x02"
REWRAP_BATCH = 200


def _key_columns() -> list[Column[Any]]:
    return [
        Column("dek_id", String(64), primary_key=True),
        Column("org_id", String(64), nullable=False),
        Column("kek_name", String(100), nullable=False),
        Column("wrapped", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    ]


def add_field_key_table(metadata: MetaData, name: str = FIELD_KEY_TABLE) -> Table:
    """Declare the service's key table (wrapped DEKs) in its metadata."""
    return Table(name, metadata, *_key_columns())


def create_field_key_table_v1() -> None:
    """Migration step: create `field_key` as first released (frozen, like the platform
    tables: a change is a new `_v2` step, never an edit of this one)."""
    from alembic import op

    op.create_table(
        FIELD_KEY_TABLE,
        sa.Column("dek_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("kek_name", sa.String(length=100), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dek_id", name=op.f(f"pk_{FIELD_KEY_TABLE}")),
    )


def drop_field_key_table_v1() -> None:
    """Drop what `create_field_key_table_v1` created."""
    from alembic import op

    op.drop_table(FIELD_KEY_TABLE)


@dataclass(frozen=True)
class DataKey:
    dek_id: str
    key: bytes


@dataclass(frozen=True)
class LegacyKey:
    """The fixed key of ciphertexts written before the port, with the DEK id their
    associated data names; kept only until `reseal_legacy` has run."""

    key: bytes
    dek_id: str


class FieldCipher:
    """Seals and opens PHI fields of one service under its transit key and key table."""

    def __init__(self, keys: KeyRing, key_table: Table, *, legacy: LegacyKey | None = None) -> None:
        self._keys = keys
        self.key_table = key_table
        self._legacy = legacy
        self._current: dict[str, str] = {}

    @property
    def kek_name(self) -> str:
        return self._keys.kek_name

    # --- data keys -----------------------------------------------------------

    async def new_data_key(
        self, session: AsyncSession, org_id: str, *, now: datetime | None = None
    ) -> DataKey:
        """A fresh DEK for `org_id`, stored wrapped in the key table in the caller's
        transaction."""
        dek_id = str(uuid4())
        key, wrapped = await self._keys.new_key(dek_id)
        await session.execute(
            insert(self.key_table).values(
                dek_id=dek_id,
                org_id=org_id,
                kek_name=self.kek_name,
                wrapped=wrapped.wrapped,
                created_at=now or datetime.now(UTC),
            )
        )
        return DataKey(dek_id, key)

    async def unwrap(self, dek_id: str, wrapped: str) -> DataKey:
        """The DEK of a key row the caller already selected (e.g. in a join)."""
        return DataKey(dek_id, await self._keys.key_for(WrappedKey(dek_id, wrapped)))

    async def data_key(self, session: AsyncSession, dek_id: str) -> DataKey:
        # A DEK in the cache is the one its row unwraps to (a rewrap changes only the
        # wrapping), so its row is read only when Vault must unwrap it again.
        cached = self._keys.cached(dek_id)
        if cached is not None:
            return DataKey(dek_id, cached)
        wrapped = await session.scalar(
            select(self.key_table.c.wrapped).where(self.key_table.c.dek_id == dek_id)
        )
        if wrapped is None:
            raise DecryptionFailed(f"no data key {dek_id}")
        return await self.unwrap(dek_id, wrapped)

    async def _current_key(self, session: AsyncSession, org_id: str) -> DataKey:
        dek_id = self._current.get(org_id)
        if dek_id is None:
            dek_id = await session.scalar(
                select(self.key_table.c.dek_id)
                .where(
                    self.key_table.c.org_id == org_id,
                    self.key_table.c.kek_name == self.kek_name,
                )
                .order_by(self.key_table.c.created_at.desc(), self.key_table.c.dek_id)
                .limit(1)
            )
        if dek_id is None:
            # Not remembered: if the caller's transaction rolls back, the key row goes with
            # it, and the next call makes another (one Vault call, nothing else).
            return await self.new_data_key(session, org_id)
        self._current[org_id] = dek_id
        return await self.data_key(session, dek_id)

    # --- fields ---------------------------------------------------------------

    @staticmethod
    def seal(
        key: DataKey, plaintext: str, *, org_id: str, table: str, column: str, row_id: str
    ) -> bytes:
        return encrypt_field(
            key.key, plaintext, FieldContext(org_id, table, column, row_id, key.dek_id)
        )

    @staticmethod
    def open(
        key: DataKey, blob: bytes, *, org_id: str, table: str, column: str, row_id: str
    ) -> str:
        return decrypt_field(key.key, blob, FieldContext(org_id, table, column, row_id, key.dek_id))

    async def seal_field(
        self,
        session: AsyncSession,
        plaintext: str,
        *,
        org_id: str,
        table: str,
        column: str,
        row_id: str,
    ) -> bytes:
        """A ciphertext that names its DEK: 0x02 || len || dek id || format-1 ciphertext."""
        return await self.seal_bytes(
            session, plaintext.encode(), org_id=org_id, table=table, column=column, row_id=row_id
        )

    async def seal_bytes(
        self,
        session: AsyncSession,
        data: bytes,
        *,
        org_id: str,
        table: str,
        column: str,
        row_id: str,
    ) -> bytes:
        """`seal_field` for binary content (a document): the same format and keys."""
        key = await self._current_key(session, org_id)
        context = FieldContext(org_id, table, column, row_id, key.dek_id)
        name = key.dek_id.encode()
        return (
            SELF_DESCRIBING_VERSION
            + bytes([len(name)])
            + name
            + encrypt_bytes(key.key, data, context)
        )

    async def open_field(
        self,
        session: AsyncSession,
        blob: bytes,
        *,
        org_id: str,
        table: str,
        column: str,
        row_id: str,
    ) -> str:
        data = await self.open_bytes(
            session, blob, org_id=org_id, table=table, column=column, row_id=row_id
        )
        return data.decode()

    async def open_bytes(
        self,
        session: AsyncSession,
        blob: bytes,
        *,
        org_id: str,
        table: str,
        column: str,
        row_id: str,
    ) -> bytes:
        if blob[:1] == SELF_DESCRIBING_VERSION and len(blob) > 2:
            size = blob[1]
            dek_id = blob[2 : 2 + size].decode()
            key = await self.data_key(session, dek_id)
            context = FieldContext(org_id, table, column, row_id, key.dek_id)
            return decrypt_bytes(key.key, blob[2 + size :], context)
        if blob[:1] == CIPHERTEXT_VERSION and self._legacy is not None:
            return decrypt_bytes(
                self._legacy.key,
                blob,
                FieldContext(org_id, table, column, row_id, self._legacy.dek_id),
            )
        raise DecryptionFailed(f"{table}.{column} of {row_id} is not sealed by this service")

    @staticmethod
    def is_legacy(blob: bytes) -> bool:
        return blob[:1] == CIPHERTEXT_VERSION


@dataclass
class RewrapReport:
    key_name: str
    latest_version: int
    total: int
    rewrapped: int
    already_latest: int
    changed_meanwhile: int
    """Rows another writer changed between the read and the update; a re-run takes them."""
    resealed: int = 0
    """Ciphertexts from before the port moved onto it (`reseal_legacy`)."""


async def rewrap_data_keys(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    key_table: Table,
    key_name: str,
    *,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    """Rewrap, in batches, every DEK of `key_table` not yet under the latest version of
    `key_name`. Safe to re-run: keys already current are left alone. `on_batch` hears
    (keys done so far, keys to do) after each batch."""
    latest = int((await vault.read_transit_key(key_name))["latest_version"])
    current = f"vault:v{latest}:"
    table = key_table
    rewrapped = changed = 0
    stale = (table.c.kek_name == key_name) & ~table.c.wrapped.startswith(current)
    async with sessions() as session:
        total = int(await session.scalar(select(func.count()).select_from(table)) or 0)
        to_do = int(await session.scalar(select(func.count()).select_from(table).where(stale)) or 0)

    async def rewrap_batch(session: AsyncSession, rows: BatchRows) -> None:
        nonlocal rewrapped, changed
        fresh = await vault.rewrap(key_name, [row.wrapped for row in rows])
        for row, wrapped in zip(rows, fresh, strict=True):
            result = await session.execute(
                sa.update(table)
                .where(table.c.dek_id == row.dek_id, table.c.wrapped == row.wrapped)
                .values(wrapped=wrapped)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                rewrapped += 1
            else:
                changed += 1

    await for_each_batch(
        sessions,
        select(table.c.dek_id, table.c.wrapped).where(stale),
        table.c.dek_id,
        rewrap_batch,
        batch_size=batch_size,
        after_batch=None if on_batch is None else lambda: on_batch(rewrapped + changed, to_do),
    )
    return RewrapReport(
        key_name=key_name,
        latest_version=latest,
        total=total,
        rewrapped=rewrapped,
        already_latest=total - to_do,
        changed_meanwhile=changed,
    )


@dataclass(frozen=True)
class SealedColumn:
    """A column whose values `seal_field` writes: `row_id` and `org_id` name the columns
    that its associated data binds."""

    table: Table
    column: str
    context_column: str
    """The column name the associated data carries (kept from before the port)."""
    id_column: str = "id"
    org_column: str = "org_id"


async def reseal_legacy(
    sessions: async_sessionmaker[AsyncSession],
    cipher: FieldCipher,
    columns: Sequence[SealedColumn],
    *,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Move format-1 ciphertexts (one fixed key) onto the port, in batches; a value
    another writer changed meanwhile is left for the next run. Returns how many moved."""

    def legacy_of(spec: SealedColumn) -> Any:
        value = spec.table.c[spec.column]
        return value.is_not(None) & (sa.func.substr(value, 1, 1) == CIPHERTEXT_VERSION)

    async with sessions() as session:
        to_do = 0
        for spec in columns:
            to_do += int(
                await session.scalar(
                    select(func.count()).select_from(spec.table).where(legacy_of(spec))
                )
                or 0
            )
    moved = 0

    async def reseal_column(spec: SealedColumn) -> None:
        table = spec.table
        value = table.c[spec.column]
        row_id_column = table.c[spec.id_column]

        async def reseal_batch(session: AsyncSession, rows: Sequence[Row[str, str, bytes]]) -> None:
            nonlocal moved
            for row_id, org_id, blob in rows:
                where = dict(
                    org_id=org_id, table=table.name, column=spec.context_column, row_id=row_id
                )
                plaintext = await cipher.open_field(session, blob, **where)
                sealed = await cipher.seal_field(session, plaintext, **where)
                result = await session.execute(
                    sa.update(table)
                    .where(row_id_column == row_id, value == blob)
                    .values({spec.column: sealed})
                )
                moved += int(result.rowcount == 1)  # type: ignore[attr-defined]

        await for_each_batch(
            sessions,
            select(row_id_column, table.c[spec.org_column], value).where(legacy_of(spec)),
            row_id_column,
            reseal_batch,
            batch_size=batch_size,
            after_batch=None if on_batch is None else lambda: on_batch(moved, to_do),
        )

    for spec in columns:
        await reseal_column(spec)
    return moved


FIELD_CIPHER_STATE = "field_cipher"


def cached_field_cipher(runtime: Any, key_name: str, key_table: Table) -> FieldCipher:
    """A service's field port, made once per runtime and kept in its state: data keys in
    `key_table`, wrapped by the transit key `key_name`."""
    cipher: FieldCipher | None = runtime.state.get(FIELD_CIPHER_STATE)
    if cipher is None:
        keys = KeyRing(runtime.vault, key_name, clock=runtime.clock)
        cipher = FieldCipher(keys, key_table)
        runtime.state[FIELD_CIPHER_STATE] = cipher
    return cipher


async def rotate_service_fields(
    settings: KitSettings,
    key_table: Table,
    key_name: str,
    *,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    """`rotate_fields` for a service whose every field was sealed through the port from
    the start (nothing from before it to move), from its settings."""
    return await rotate_fields(
        settings.database_url.get_secret_value(),
        Vault.from_settings(settings),
        key_table,
        key_name,
        batch_size=batch_size,
        on_batch=on_batch,
    )


async def rotate_fields(
    database_url: str,
    vault: Vault,
    key_table: Table,
    key_name: str,
    *,
    legacy: Sequence[tuple[FieldCipher, Sequence[SealedColumn]]] = (),
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    """What `careloop keys rewrap <service>` runs after the service's transit key rotated:
    first every ciphertext from before the port is moved onto it (each `legacy` cipher
    opens its own columns), then every data key of `key_table` is rewrapped under the
    latest version of `key_name`. Both steps are idempotent, so a re-run is safe; once it
    reports nothing changed meanwhile, old versions can be retired."""
    engine = make_engine(database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    try:
        resealed = 0
        for cipher, columns in legacy:
            resealed += await reseal_legacy(
                sessions, cipher, columns, batch_size=batch_size, on_batch=on_batch
            )
        report = await rewrap_data_keys(
            sessions, vault, key_table, key_name, batch_size=batch_size, on_batch=on_batch
        )
    finally:
        await engine.dispose()
    report.resealed = resealed
    return report
