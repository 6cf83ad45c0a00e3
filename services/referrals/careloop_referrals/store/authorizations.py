"""Prior authorizations of referrals and the visits counted against them.

The authorization number arrives sealed (the use cases seal and open it through the
kit's field port); saves are checked against the version read, like the referral's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from careloop_kit.repository import Repository
from careloop_kit.rows import record_of, values_of
from careloop_referrals.domain.authorization import Authorization, AuthorizationStatus
from careloop_referrals.store.tables import authorization_visit, referral_authorization

_ENUMS = {"status": AuthorizationStatus}


class StaleAuthorization(Exception):
    """The authorization changed since it was read: another change won."""


def authorization_of(row: Any) -> Authorization:
    return record_of(Authorization, row, convert=_ENUMS)


class AuthorizationRepository(Repository):
    async def get(
        self, org_id: str, referral_id: str, *, for_update: bool = False
    ) -> Authorization | None:
        query = select(referral_authorization).where(
            referral_authorization.c.org_id == org_id,
            referral_authorization.c.referral_id == referral_id,
        )
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return None if row is None else authorization_of(row._mapping)

    async def save(
        self,
        authorization: Authorization,
        *,
        previous_version: int | None,
        number_ct: bytes | None,
        keep_number: bool,
    ) -> None:
        """Insert (no `previous_version`) or update against the version read;
        `StaleAuthorization` when another change was saved first. `keep_number`: the
        change did not touch the number."""
        values = values_of(authorization)
        if not keep_number:
            values["number_ct"] = number_ct
        if previous_version is None:
            await self._session.execute(insert(referral_authorization).values(**values))
            return
        result = await self._session.execute(
            update(referral_authorization)
            .where(
                referral_authorization.c.org_id == authorization.org_id,
                referral_authorization.c.referral_id == authorization.referral_id,
                referral_authorization.c.version == previous_version,
            )
            .values(**values)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise StaleAuthorization(authorization.referral_id)

    async def count_once(
        self, authorization: Authorization, appointment_id: str, *, now: datetime
    ) -> bool:
        """Mark the appointment as a visit of the authorization; False when it was
        counted already (a redelivered arrival)."""
        result = await self._session.execute(
            pg_insert(authorization_visit)
            .values(
                referral_id=authorization.referral_id,
                appointment_id=appointment_id,
                org_id=authorization.org_id,
                counted_at=now,
            )
            .on_conflict_do_nothing()
        )
        return getattr(result, "rowcount", 0) == 1
