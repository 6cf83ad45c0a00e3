"""Every query on patient tables; encrypts on the way in, decrypts on the way out.

Repositories never commit: the request boundary does.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import uuid4

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.crypto import BlindIndexer, KeyRing
from careloop_kit.fields import DataKey, FieldCipher
from careloop_patients.domain.patient import PatientDetails, PatientStatus, SearchKey, search_keys
from careloop_patients.store.codec import decode_fields, encode_fields
from careloop_patients.store.tables import ENCRYPTED_COLUMNS, patient, patient_key, patient_lookup


@dataclass(frozen=True)
class StoredPatient:
    id: str
    org_id: str
    location_id: str | None
    status: PatientStatus
    merged_into_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    details: PatientDetails


class StaleVersion(Exception):
    """The record changed since the caller read it."""


class PatientRepository:
    def __init__(self, session: AsyncSession, keys: KeyRing, indexer: BlindIndexer) -> None:
        self._session = session
        # Each record has its own data key, named by `patient.dek_id`.
        self._cipher = FieldCipher(keys, patient_key)
        self._indexer = indexer

    async def add(
        self,
        *,
        org_id: str,
        location_id: str | None,
        details: PatientDetails,
        now: datetime,
    ) -> StoredPatient:
        patient_id = str(uuid4())
        key = await self._cipher.new_data_key(self._session, org_id, now=now)
        await self._session.execute(
            insert(patient).values(
                id=patient_id,
                org_id=org_id,
                location_id=location_id,
                status=PatientStatus.ACTIVE.value,
                merged_into_id=None,
                version=1,
                dek_id=key.dek_id,
                created_at=now,
                updated_at=now,
                **self._encrypt(key, org_id, patient_id, details),
            )
        )
        await self._write_lookups(org_id, patient_id, details)
        return StoredPatient(
            id=patient_id,
            org_id=org_id,
            location_id=location_id,
            status=PatientStatus.ACTIVE,
            merged_into_id=None,
            version=1,
            created_at=now,
            updated_at=now,
            details=details,
        )

    async def get(
        self, org_id: str, patient_id: str, *, for_update: bool = False
    ) -> StoredPatient | None:
        query = (
            select(patient, patient_key.c.wrapped)
            .join(patient_key, patient_key.c.dek_id == patient.c.dek_id)
            .where(patient.c.org_id == org_id, patient.c.id == patient_id)
        )
        if for_update:
            query = query.with_for_update(of=patient)
        row = (await self._session.execute(query)).first()
        return None if row is None else await self._decrypt_row(row)

    async def find(
        self,
        org_id: str,
        keys: list[SearchKey],
        *,
        limit: int,
        locations: Collection[str] | None = None,
    ) -> list[StoredPatient]:
        """Patients matching every key (exact match through blind indexes); with
        `locations`, only patients registered at one of them (None: every location)."""
        query = select(patient, patient_key.c.wrapped).join(
            patient_key, patient_key.c.dek_id == patient.c.dek_id
        )
        conditions = [patient.c.org_id == org_id, patient.c.status == PatientStatus.ACTIVE.value]
        if locations is not None:
            conditions.append(patient.c.location_id.in_(list(locations)))
        for key in keys:
            # Every blind-index version still held: rows indexed before a rotation match
            # until `careloop keys reindex patients` has moved them to the current one.
            tokens = self._indexer.tokens(key.kind, org_id, key.value)
            matching = select(patient_lookup.c.patient_id).where(
                and_(
                    patient_lookup.c.org_id == org_id,
                    patient_lookup.c.kind == key.kind,
                    or_(
                        *(
                            and_(
                                patient_lookup.c.index_version == version,
                                patient_lookup.c.token == token,
                            )
                            for version, token in tokens.items()
                        )
                    ),
                )
            )
            conditions.append(patient.c.id.in_(matching))
        query = query.where(*conditions).order_by(patient.c.created_at, patient.c.id).limit(limit)
        rows = (await self._session.execute(query)).all()
        return [await self._decrypt_row(row) for row in rows]

    async def update(
        self,
        current: StoredPatient,
        details: PatientDetails,
        *,
        expected_version: int,
        now: datetime,
        status: PatientStatus | None = None,
        merged_into_id: str | None = None,
    ) -> StoredPatient:
        updated = replace(
            current,
            status=status or current.status,
            merged_into_id=merged_into_id or current.merged_into_id,
            version=expected_version + 1,
            updated_at=now,
            details=details,
        )
        key = await self._key_of(current)
        values = self._encrypt(key, current.org_id, current.id, details)
        result = await self._session.execute(
            update(patient)
            .where(
                patient.c.id == current.id,
                patient.c.org_id == current.org_id,
                patient.c.version == expected_version,
            )
            .values(
                version=updated.version,
                updated_at=now,
                status=updated.status.value,
                merged_into_id=updated.merged_into_id,
                **values,
            )
        )
        if getattr(result, "rowcount", 0) != 1:
            raise StaleVersion(current.id)
        await self.reindex(updated)
        return updated

    # --- internals ------------------------------------------------------------

    def _token(self, org_id: str, key: SearchKey) -> str:
        return self._indexer.token(key.kind, org_id, key.value)

    async def reindex(self, stored: StoredPatient) -> None:
        """Replace the patient's lookup tokens with the current blind-index version's."""
        await self._session.execute(
            delete(patient_lookup).where(patient_lookup.c.patient_id == stored.id)
        )
        if stored.status is PatientStatus.ACTIVE:
            await self._write_lookups(stored.org_id, stored.id, stored.details)

    async def _write_lookups(self, org_id: str, patient_id: str, details: PatientDetails) -> None:
        rows = [
            {
                "org_id": org_id,
                "patient_id": patient_id,
                "kind": key.kind,
                "token": self._token(org_id, key),
                "index_version": self._indexer.version,
            }
            for key in search_keys(details)
        ]
        if rows:
            await self._session.execute(insert(patient_lookup), rows)

    def _encrypt(
        self, key: DataKey, org_id: str, patient_id: str, details: PatientDetails
    ) -> dict[str, bytes | None]:
        plain = encode_fields(details)
        return {
            f"{column}_ct": None
            if plain[column] is None
            else self._cipher.seal(
                key,
                plain[column] or "",
                org_id=org_id,
                table="patient",
                column=column,
                row_id=patient_id,
            )
            for column in ENCRYPTED_COLUMNS
        }

    async def _key_of(self, stored: StoredPatient) -> DataKey:
        row = (
            await self._session.execute(
                select(patient_key.c.dek_id, patient_key.c.wrapped)
                .join(patient, patient.c.dek_id == patient_key.c.dek_id)
                .where(patient.c.id == stored.id)
            )
        ).one()
        return await self._cipher.unwrap(row.dek_id, row.wrapped)

    async def _decrypt_row(self, row: Row[tuple[object, ...]]) -> StoredPatient:
        m = row._mapping
        key = await self._cipher.unwrap(m["dek_id"], m["wrapped"])
        plain: dict[str, str | None] = {}
        for column in ENCRYPTED_COLUMNS:
            blob = m[f"{column}_ct"]
            plain[column] = (
                None
                if blob is None
                else self._cipher.open(
                    key, blob, org_id=m["org_id"], table="patient", column=column, row_id=m["id"]
                )
            )
        return StoredPatient(
            id=m["id"],
            org_id=m["org_id"],
            location_id=m["location_id"],
            status=PatientStatus(m["status"]),
            merged_into_id=m["merged_into_id"],
            version=m["version"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            details=decode_fields(plain),
        )
