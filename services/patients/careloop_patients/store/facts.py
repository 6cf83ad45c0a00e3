"""Every query on `clinical_facts`; seals on the way in, opens on the way out.

A fact is sealed with its patient's data key (`patient.dek_id`), so rewrapping the
patients' keys covers facts too and a fact is bound (associated data) to its own row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.crypto import BlindIndexer, KeyRing
from careloop_kit.fields import DataKey, FieldCipher
from careloop_patients.domain.facts import Coding, Fact, FactKind, FactSource, Quantity
from careloop_patients.store.tables import clinical_facts, patient, patient_key

TABLE = "clinical_facts"
# Blind-index columns (each has a key of its own, derived from the master key).
DEDUP_INDEX, CONTENT_INDEX = "fact-source-key", "fact-content"


@dataclass(frozen=True)
class StoredFact:
    id: str
    org_id: str
    patient_id: str
    kind: FactKind
    version: int
    source: FactSource
    created_at: datetime
    updated_at: datetime
    resource: dict[str, Any]
    """The FHIR resource as received (no `id`, no `meta`: those are the fact's)."""
    fact: Fact
    content_token: str
    index_version: int
    source_key: str | None = None
    """What identifies the resource at its source (`domain.facts.source_key`), if any."""


def encode_fact(fact: Fact) -> str:
    return json.dumps(
        {
            "kind": fact.kind.value,
            "status": fact.status,
            "codes": [[c.system, c.code] for c in fact.codes],
            "effective_on": fact.effective_on.isoformat(),
            "effective_until": None
            if fact.effective_until is None
            else fact.effective_until.isoformat(),
            "quantities": [
                {
                    "value": q.value,
                    "unit": q.unit,
                    "code": None if q.code is None else [q.code.system, q.code.code],
                }
                for q in fact.quantities
            ],
        },
        separators=(",", ":"),
    )


def decode_fact(text: str) -> Fact:
    raw = json.loads(text)
    return Fact(
        kind=FactKind(raw["kind"]),
        status=raw["status"],
        codes=tuple(Coding(s, c) for s, c in raw["codes"]),
        effective_on=date.fromisoformat(raw["effective_on"]),
        effective_until=None
        if raw["effective_until"] is None
        else date.fromisoformat(raw["effective_until"]),
        quantities=tuple(
            Quantity(
                value=q["value"],
                unit=q["unit"],
                code=None if q["code"] is None else Coding(*q["code"]),
            )
            for q in raw["quantities"]
        ),
    )


def canonical(resource: Mapping[str, Any]) -> str:
    """One text per content, whatever the key order it arrived in."""
    return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class FactRepository:
    def __init__(self, session: AsyncSession, keys: KeyRing, indexer: BlindIndexer) -> None:
        self._session = session
        self._cipher = FieldCipher(keys, patient_key)
        self._indexer = indexer

    def content_token(
        self, org_id: str, source: FactSource, resource: Mapping[str, Any], version: int
    ) -> str:
        """Keyed digest of what was sent (a plain hash of PHI could be matched against
        guessed contents)."""
        return self._indexer.token_at(
            version, CONTENT_INDEX, org_id, f"{source.value}\x1f{canonical(resource)}"
        )

    async def find_by_source_key(
        self, org_id: str, patient_id: str, source: FactSource, key: str, *, for_update: bool
    ) -> StoredFact | None:
        tokens = self._indexer.tokens(DEDUP_INDEX, org_id, f"{source.value}\x1f{key}")
        query = self._select().where(
            clinical_facts.c.org_id == org_id,
            clinical_facts.c.patient_id == patient_id,
            or_(
                *(
                    and_(
                        clinical_facts.c.index_version == version,
                        clinical_facts.c.dedup_token == token,
                    )
                    for version, token in tokens.items()
                )
            ),
        )
        if for_update:
            query = query.with_for_update(of=clinical_facts)
        row = (await self._session.execute(query)).first()
        return None if row is None else await self._open(row)

    async def kind_of(self, org_id: str, patient_id: str, fact_id: str) -> FactKind | None:
        """The fact's kind, read without opening anything (for the audit of a refusal)."""
        kind = await self._session.scalar(
            select(clinical_facts.c.kind).where(
                clinical_facts.c.org_id == org_id,
                clinical_facts.c.patient_id == patient_id,
                clinical_facts.c.id == fact_id,
            )
        )
        return None if kind is None else FactKind(kind)

    async def get(
        self, org_id: str, patient_id: str, fact_id: str, *, for_update: bool = False
    ) -> StoredFact | None:
        query = self._select().where(
            clinical_facts.c.org_id == org_id,
            clinical_facts.c.patient_id == patient_id,
            clinical_facts.c.id == fact_id,
        )
        if for_update:
            query = query.with_for_update(of=clinical_facts)
        row = (await self._session.execute(query)).first()
        return None if row is None else await self._open(row)

    async def list(
        self, org_id: str, patient_id: str, *, kind: FactKind | None = None
    ) -> list[StoredFact]:
        query = self._select().where(
            clinical_facts.c.org_id == org_id, clinical_facts.c.patient_id == patient_id
        )
        if kind is not None:
            query = query.where(clinical_facts.c.kind == kind.value)
        query = query.order_by(clinical_facts.c.created_at, clinical_facts.c.id)
        rows = (await self._session.execute(query)).all()
        return [await self._open(row) for row in rows]

    async def add(
        self,
        *,
        org_id: str,
        patient_id: str,
        source: FactSource,
        source_key: str | None,
        resource: dict[str, Any],
        fact: Fact,
        now: datetime,
    ) -> StoredFact:
        fact_id = str(uuid4())
        key = await self._patient_key(org_id, patient_id)
        version = self._indexer.version
        stored = StoredFact(
            id=fact_id,
            org_id=org_id,
            patient_id=patient_id,
            kind=fact.kind,
            version=1,
            source=source,
            created_at=now,
            updated_at=now,
            resource=resource,
            fact=fact,
            content_token=self.content_token(org_id, source, resource, version),
            index_version=version,
            source_key=source_key,
        )
        await self._session.execute(
            insert(clinical_facts).values(
                id=fact_id,
                org_id=org_id,
                patient_id=patient_id,
                kind=fact.kind.value,
                version=1,
                source=source.value,
                dedup_token=self._dedup_token(stored),
                content_token=stored.content_token,
                index_version=version,
                created_at=now,
                updated_at=now,
                **self._seal(key, stored),
            )
        )
        return stored

    async def revise(
        self,
        current: StoredFact,
        *,
        resource: dict[str, Any],
        fact: Fact,
        now: datetime,
    ) -> StoredFact:
        """The next version of `current`, under the current blind-index version."""
        version = self._indexer.version
        revised = replace(
            current,
            version=current.version + 1,
            updated_at=now,
            resource=resource,
            fact=fact,
            content_token=self.content_token(current.org_id, current.source, resource, version),
            index_version=version,
        )
        key = await self._patient_key(current.org_id, current.patient_id)
        values: dict[str, Any] = {
            "version": revised.version,
            "updated_at": now,
            "dedup_token": self._dedup_token(revised),
            "content_token": revised.content_token,
            "index_version": version,
            **self._seal(key, revised),
        }
        await self._session.execute(
            update(clinical_facts)
            .where(
                clinical_facts.c.id == current.id,
                clinical_facts.c.version == current.version,
            )
            .values(**values)
        )
        return revised

    async def reindex(self, current: StoredFact) -> None:
        """Move the fact's tokens to the current blind-index version (same version of
        the fact: its content did not change)."""
        version = self._indexer.version
        moved = replace(
            current,
            content_token=self.content_token(
                current.org_id, current.source, current.resource, version
            ),
            index_version=version,
        )
        await self._session.execute(
            update(clinical_facts)
            .where(clinical_facts.c.id == current.id)
            .values(
                dedup_token=self._dedup_token(moved),
                content_token=moved.content_token,
                index_version=version,
            )
        )

    # --- internals ------------------------------------------------------------

    def _dedup_token(self, stored: StoredFact) -> str | None:
        if stored.source_key is None:
            return None
        return self._indexer.token(
            DEDUP_INDEX, stored.org_id, f"{stored.source.value}\x1f{stored.source_key}"
        )

    def _select(self) -> Any:
        return (
            select(clinical_facts, patient_key.c.dek_id, patient_key.c.wrapped)
            .join(patient, patient.c.id == clinical_facts.c.patient_id)
            .join(patient_key, patient_key.c.dek_id == patient.c.dek_id)
        )

    async def _patient_key(self, org_id: str, patient_id: str) -> DataKey:
        row = (
            await self._session.execute(
                select(patient_key.c.dek_id, patient_key.c.wrapped)
                .join(patient, patient.c.dek_id == patient_key.c.dek_id)
                .where(patient.c.org_id == org_id, patient.c.id == patient_id)
            )
        ).one()
        return await self._cipher.unwrap(row.dek_id, row.wrapped)

    def _seal(self, key: DataKey, stored: StoredFact) -> dict[str, bytes | None]:
        plain = {
            "resource": canonical(stored.resource),
            "fact": encode_fact(stored.fact),
            "source_key": stored.source_key,
        }
        return {
            f"{column}_ct": None
            if text is None
            else self._cipher.seal(
                key, text, org_id=stored.org_id, table=TABLE, column=column, row_id=stored.id
            )
            for column, text in plain.items()
        }

    async def _open(self, row: Row[Any]) -> StoredFact:
        m = row._mapping
        key = await self._cipher.unwrap(m["dek_id"], m["wrapped"])

        def opened(column: str) -> str:
            return self._cipher.open(
                key,
                m[f"{column}_ct"],
                org_id=m["org_id"],
                table=TABLE,
                column=column,
                row_id=m["id"],
            )

        return StoredFact(
            id=m["id"],
            org_id=m["org_id"],
            patient_id=m["patient_id"],
            kind=FactKind(m["kind"]),
            version=m["version"],
            source=FactSource(m["source"]),
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            resource=json.loads(opened("resource")),
            fact=decode_fact(opened("fact")),
            content_token=m["content_token"],
            index_version=m["index_version"],
            source_key=None if m["source_key_ct"] is None else opened("source_key"),
        )
