"""Rewrap every stored data key under the PHI transit key's latest version.

After `transit/keys/careloop-phi/rotate`, new patients get data keys wrapped by the new
version, but the keys stored before stay wrapped by the old ones, which Vault must then
keep forever. Rewrapping moves them to the latest version without any plaintext leaving
Vault and without touching the encrypted fields (they are encrypted by the data keys,
which do not change); afterwards the old versions can be retired with
`min_decryption_version`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update

from careloop_kit.db import make_engine, make_sessionmaker
from careloop_kit.vault import Vault
from careloop_patients.settings import PatientsSettings
from careloop_patients.store.tables import patient_key

REWRAP_BATCH = 200


@dataclass
class RewrapReport:
    key_name: str
    latest_version: int
    total: int
    rewrapped: int
    already_latest: int
    changed_meanwhile: int
    """Rows another writer changed between the read and the update; a re-run takes them."""


async def rewrap_data_keys(
    settings: PatientsSettings,
    *,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    """Rewrap, in batches, every data key not yet under the latest version. `on_batch`
    hears (keys done so far, keys to do) after each batch."""
    vault = Vault.from_settings(settings)
    key_name = settings.phi_transit_key
    latest = int((await vault.read_transit_key(key_name))["latest_version"])
    current = f"vault:v{latest}:"
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1)
    sessions = make_sessionmaker(engine)
    rewrapped = changed = 0
    try:
        async with sessions() as session:
            total = int(await session.scalar(select(func.count()).select_from(patient_key)) or 0)
            stale_filter = (patient_key.c.kek_name == key_name) & ~patient_key.c.wrapped.startswith(
                current
            )
            to_do = int(
                await session.scalar(
                    select(func.count()).select_from(patient_key).where(stale_filter)
                )
                or 0
            )
        after = ""
        while True:
            async with sessions.begin() as session:
                rows = (
                    await session.execute(
                        select(patient_key.c.dek_id, patient_key.c.wrapped)
                        .where(stale_filter, patient_key.c.dek_id > after)
                        .order_by(patient_key.c.dek_id)
                        .limit(batch_size)
                    )
                ).all()
                if not rows:
                    break
                fresh = await vault.rewrap(key_name, [row.wrapped for row in rows])
                for row, wrapped in zip(rows, fresh, strict=True):
                    result = await session.execute(
                        update(patient_key)
                        .where(
                            patient_key.c.dek_id == row.dek_id,
                            patient_key.c.wrapped == row.wrapped,
                        )
                        .values(wrapped=wrapped)
                    )
                    if result.rowcount == 1:  # type: ignore[attr-defined]
                        rewrapped += 1
                    else:
                        changed += 1
                after = rows[-1].dek_id
            if on_batch is not None:
                on_batch(rewrapped + changed, to_do)
    finally:
        await engine.dispose()
    return RewrapReport(
        key_name=key_name,
        latest_version=latest,
        total=total,
        rewrapped=rewrapped,
        already_latest=total - to_do,
        changed_meanwhile=changed,
    )
