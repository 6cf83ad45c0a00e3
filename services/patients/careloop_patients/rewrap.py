"""Rewrap every stored data key under the PHI transit key's latest version.

After `transit/keys/careloop-phi/rotate`, new patients get data keys wrapped by the new
version, but the keys stored before stay wrapped by the old ones, which Vault must then
keep forever. Rewrapping moves them to the latest version without any plaintext leaving
Vault and without touching the encrypted fields (they are encrypted by the data keys,
which do not change); afterwards the old versions can be retired with
`min_decryption_version`. The work itself is the kit port's (`careloop_kit.fields`).

`reindex` is the blind index's counterpart after its master key is rotated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.crypto import BlindIndexer, KeyRing
from careloop_kit.db import make_engine, make_sessionmaker
from careloop_kit.db.batches import BatchRows, for_each_batch
from careloop_kit.fields import REWRAP_BATCH, RewrapReport, rotate_fields
from careloop_kit.vault import Vault
from careloop_patients.settings import PatientsSettings
from careloop_patients.store.facts import FactRepository
from careloop_patients.store.repository import PatientRepository
from careloop_patients.store.tables import clinical_facts, patient, patient_key, patient_lookup

__all__ = ["REWRAP_BATCH", "ReindexReport", "RewrapReport", "reindex", "rewrap"]


async def rewrap(
    settings: PatientsSettings,
    *,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    """Rewrap, in batches, every patient data key not yet under the latest version
    (patients has no ciphertexts from before the port to move)."""
    return await rotate_fields(
        settings.database_url.get_secret_value(),
        Vault.from_settings(settings),
        patient_key,
        settings.phi_transit_key,
        batch_size=batch_size,
        on_batch=on_batch,
    )


@dataclass
class ReindexReport:
    version: int
    reindexed: int
    """Patients and clinical facts moved to the current version."""
    left: int
    """Lookup rows and facts still under an older version (0: the old key can be retired)."""


async def reindex(
    settings: PatientsSettings,
    *,
    indexer: BlindIndexer | None = None,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> ReindexReport:
    """Recompute, in batches, the lookup tokens of every patient, and the dedup and
    content tokens of every clinical fact, still indexed under an older blind-index
    version. Each row is decrypted through the port and re-indexed in its own row lock,
    so it is safe while the service runs and safe to re-run."""
    vault = Vault.from_settings(settings)
    if indexer is None:
        indexer = BlindIndexer.from_secret(
            await vault.read_secret(settings.blind_index_secret_path)
        )
    keys = KeyRing(vault, settings.phi_transit_key)
    stale = select(patient_lookup.c.patient_id).where(
        patient_lookup.c.index_version != indexer.version
    )
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1)
    sessions = make_sessionmaker(engine)
    done = 0
    try:
        async with sessions() as session:
            to_do = int(
                await session.scalar(
                    select(func.count(distinct(patient_lookup.c.patient_id))).where(
                        patient_lookup.c.index_version != indexer.version
                    )
                )
                or 0
            )

        async def reindex_batch(session: AsyncSession, rows: BatchRows) -> None:
            nonlocal done
            repo = PatientRepository(session, keys, indexer)
            for row in rows:
                stored = await repo.get(row.org_id, row.id, for_update=True)
                if stored is not None:
                    await repo.reindex(stored)
                    done += 1

        await for_each_batch(
            sessions,
            select(patient.c.id, patient.c.org_id).where(patient.c.id.in_(stale)),
            patient.c.id,
            reindex_batch,
            batch_size=batch_size,
            after_batch=None if on_batch is None else lambda: on_batch(done, to_do),
        )

        async def reindex_facts(session: AsyncSession, rows: BatchRows) -> None:
            nonlocal done
            repo = FactRepository(session, keys, indexer)
            for row in rows:
                stored = await repo.get(row.org_id, row.patient_id, row.id, for_update=True)
                if stored is not None and stored.index_version != indexer.version:
                    await repo.reindex(stored)
                    done += 1

        stale_facts = clinical_facts.c.index_version != indexer.version
        async with sessions() as session:
            to_do += int(
                await session.scalar(
                    select(func.count()).select_from(clinical_facts).where(stale_facts)
                )
                or 0
            )
        await for_each_batch(
            sessions,
            select(clinical_facts.c.id, clinical_facts.c.org_id, clinical_facts.c.patient_id).where(
                stale_facts
            ),
            clinical_facts.c.id,
            reindex_facts,
            batch_size=batch_size,
            after_batch=None if on_batch is None else lambda: on_batch(done, to_do),
        )
        async with sessions() as session:
            left = int(
                await session.scalar(
                    select(func.count())
                    .select_from(patient_lookup)
                    .where(patient_lookup.c.index_version != indexer.version)
                )
                or 0
            ) + int(
                await session.scalar(
                    select(func.count()).select_from(clinical_facts).where(stale_facts)
                )
                or 0
            )
    finally:
        await engine.dispose()
    return ReindexReport(version=indexer.version, reindexed=done, left=left)
