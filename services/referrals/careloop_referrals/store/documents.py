"""The documents of referral packets. Content and file names arrive sealed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select

from careloop_kit.repository import Repository
from careloop_referrals.store.tables import referral_document


@dataclass(frozen=True)
class StoredDocument:
    id: str
    referral_id: str
    content_type: str
    size_bytes: int
    filename_ct: bytes | None
    created_at: datetime
    created_by: str


_LISTED = (
    referral_document.c.id,
    referral_document.c.referral_id,
    referral_document.c.content_type,
    referral_document.c.size_bytes,
    referral_document.c.filename_ct,
    referral_document.c.created_at,
    referral_document.c.created_by,
)


class DocumentRepository(Repository):
    async def add(
        self,
        document: StoredDocument,
        *,
        org_id: str,
        content_ct: bytes,
    ) -> None:
        await self._session.execute(
            insert(referral_document).values(
                id=document.id,
                referral_id=document.referral_id,
                org_id=org_id,
                content_type=document.content_type,
                size_bytes=document.size_bytes,
                filename_ct=document.filename_ct,
                content_ct=content_ct,
                created_at=document.created_at,
                created_by=document.created_by,
            )
        )

    async def of_referral(self, org_id: str, referral_id: str) -> list[StoredDocument]:
        rows = await self._session.execute(
            select(*_LISTED)
            .where(
                referral_document.c.org_id == org_id,
                referral_document.c.referral_id == referral_id,
            )
            .order_by(referral_document.c.created_at, referral_document.c.id)
        )
        return [StoredDocument(**row._mapping) for row in rows]

    async def content_of(
        self, org_id: str, referral_id: str, document_id: str
    ) -> tuple[StoredDocument, bytes] | None:
        row = (
            await self._session.execute(
                select(*_LISTED, referral_document.c.content_ct).where(
                    referral_document.c.org_id == org_id,
                    referral_document.c.referral_id == referral_id,
                    referral_document.c.id == document_id,
                )
            )
        ).first()
        if row is None:
            return None
        values = dict(row._mapping)
        content: bytes = values.pop("content_ct")
        return StoredDocument(**values), content
