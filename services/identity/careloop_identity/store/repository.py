"""Every query of the identity service. Repositories never commit: the caller's
transaction boundary does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_identity.store.tables import (
    break_glass_grant,
    location,
    login_session,
    organization,
    refresh_token,
    user_account,
)
from careloop_kit.rows import record_of, values_of

T = TypeVar("T")


class DuplicateEmail(Exception):
    """An account with this email already exists in the organization."""


@dataclass(frozen=True)
class StoredOrganization:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class StoredLocation:
    id: str
    org_id: str
    name: str
    address: dict[str, Any] | None
    time_zone: str
    sensitive: bool
    features: dict[str, bool]
    created_at: datetime


@dataclass(frozen=True)
class StoredUser:
    id: str
    org_id: str
    email: str
    display_name: str
    password_hash: str
    roles: tuple[str, ...]
    locations: tuple[str, ...]
    patient_id: str | None
    failed_attempts: int
    locked_until: datetime | None
    totp_secret_ct: bytes | None
    totp_enabled: bool
    totp_last_step: int | None
    created_at: datetime


@dataclass(frozen=True)
class StoredSession:
    id: str
    org_id: str
    user_id: str
    amr: tuple[str, ...]
    created_at: datetime
    last_active_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class StoredRefreshToken:
    token_hash: str
    session_id: str
    used_at: datetime | None


@dataclass(frozen=True)
class StoredBreakGlassGrant:
    id: str
    org_id: str
    user_id: str
    session_id: str
    patient_id: str
    reason_code: str
    reason_ct: bytes
    granted_at: datetime
    expires_at: datetime


async def fetch_one(
    session: AsyncSession,
    query: Select[Any],
    record: Callable[[Any], T],
    *,
    for_update: bool = False,
) -> T | None:
    """The record of the one row `query` finds (None without one), the row locked with
    `for_update`."""
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).one_or_none()
    return None if row is None else record(row._mapping)


def _organization(m: Any) -> StoredOrganization:
    return record_of(StoredOrganization, m)


def _user(m: Any) -> StoredUser:
    return record_of(StoredUser, m, tuples=("roles", "locations"))


def _session(m: Any) -> StoredSession:
    return record_of(StoredSession, m, tuples=("amr",))


def _location(m: Any) -> StoredLocation:
    return record_of(StoredLocation, m, convert={"features": dict})


def _refresh_token(m: Any) -> StoredRefreshToken:
    return record_of(StoredRefreshToken, m)


class IdentityRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # --- organizations and locations -------------------------------------------

    async def add_organization(self, org_id: str, name: str, now: datetime) -> StoredOrganization:
        stored = StoredOrganization(id=org_id, name=name, created_at=now)
        await self._session.execute(insert(organization).values(**values_of(stored)))
        return stored

    async def get_organization(self, org_id: str) -> StoredOrganization | None:
        query = select(organization).where(organization.c.id == org_id)
        return await fetch_one(self._session, query, _organization)

    async def list_organizations(self, limit: int) -> list[StoredOrganization]:
        rows = await self._session.execute(
            select(organization).order_by(organization.c.created_at, organization.c.id).limit(limit)
        )
        return [_organization(r._mapping) for r in rows]

    async def add_location(self, stored: StoredLocation) -> StoredLocation:
        await self._session.execute(insert(location).values(**values_of(stored)))
        return stored

    async def list_locations(self, org_id: str) -> list[StoredLocation]:
        rows = await self._session.execute(
            select(location)
            .where(location.c.org_id == org_id)
            .order_by(location.c.created_at, location.c.id)
        )
        return [_location(r._mapping) for r in rows]

    async def get_location(
        self, org_id: str, location_id: str, *, for_update: bool = False
    ) -> StoredLocation | None:
        query = select(location).where(location.c.org_id == org_id, location.c.id == location_id)
        return await fetch_one(self._session, query, _location, for_update=for_update)

    async def update_location(self, org_id: str, location_id: str, values: dict[str, Any]) -> None:
        await self._session.execute(
            update(location)
            .where(location.c.org_id == org_id, location.c.id == location_id)
            .values(**values)
        )

    async def location_ids(self, org_id: str) -> set[str]:
        rows = await self._session.execute(select(location.c.id).where(location.c.org_id == org_id))
        return {r.id for r in rows}

    # --- users -----------------------------------------------------------------

    async def _update_user(self, user_id: str, **values: Any) -> None:
        await self._session.execute(
            update(user_account).where(user_account.c.id == user_id).values(**values)
        )

    async def add_user(self, values: dict[str, Any]) -> StoredUser:
        try:
            async with self._session.begin_nested():
                await self._session.execute(insert(user_account).values(**values))
        except IntegrityError as exc:
            raise DuplicateEmail(values["email"]) from exc
        user = await self.get_user(values["org_id"], values["id"])
        assert user is not None
        return user

    async def get_user(
        self, org_id: str, user_id: str, *, for_update: bool = False
    ) -> StoredUser | None:
        query = select(user_account).where(
            user_account.c.org_id == org_id, user_account.c.id == user_id
        )
        return await fetch_one(self._session, query, _user, for_update=for_update)

    async def list_users(self, org_id: str, limit: int, after: str | None) -> list[StoredUser]:
        """Users of the organization in id order, from after the `after` id."""
        query = select(user_account).where(user_account.c.org_id == org_id)
        if after is not None:
            query = query.where(user_account.c.id > after)
        rows = await self._session.execute(query.order_by(user_account.c.id).limit(limit))
        return [_user(r._mapping) for r in rows]

    async def set_assignment(
        self,
        user_id: str,
        roles: list[str],
        locations: list[str],
        patient_id: str | None,
        now: datetime,
    ) -> None:
        await self._update_user(
            user_id, roles=roles, locations=locations, patient_id=patient_id, updated_at=now
        )

    async def org_admin_ids(self, org_id: str) -> set[str]:
        """Users of the organization holding the org_admin role (row-locked, so two
        concurrent demotions cannot both see another admin left)."""
        rows = await self._session.execute(
            select(user_account.c.id)
            .where(
                user_account.c.org_id == org_id,
                user_account.c.roles.contains(["org_admin"]),
            )
            .with_for_update()
        )
        return {r.id for r in rows}

    async def find_user_by_email(self, org_id: str, email: str) -> StoredUser | None:
        """Locks the row: concurrent logins of one account count failures one at a time."""
        query = select(user_account).where(
            user_account.c.org_id == org_id, user_account.c.email == email
        )
        return await fetch_one(self._session, query, _user, for_update=True)

    async def set_failures(
        self, user_id: str, failed_attempts: int, locked_until: datetime | None, now: datetime
    ) -> None:
        await self._update_user(
            user_id, failed_attempts=failed_attempts, locked_until=locked_until, updated_at=now
        )

    async def set_password_hash(self, user_id: str, password_hash: str, now: datetime) -> None:
        await self._update_user(user_id, password_hash=password_hash, updated_at=now)

    async def set_totp(
        self,
        user_id: str,
        *,
        secret_ct: bytes | None,
        enabled: bool,
        last_step: int | None,
        now: datetime,
    ) -> None:
        await self._update_user(
            user_id,
            totp_secret_ct=secret_ct,
            totp_enabled=enabled,
            totp_last_step=last_step,
            updated_at=now,
        )

    async def set_totp_last_step(self, user_id: str, step: int) -> None:
        await self._update_user(user_id, totp_last_step=step)

    # --- sessions and refresh tokens -------------------------------------------

    async def add_session(
        self, session_id: str, org_id: str, user_id: str, amr: tuple[str, ...], now: datetime
    ) -> StoredSession:
        stored = StoredSession(
            id=session_id,
            org_id=org_id,
            user_id=user_id,
            amr=amr,
            created_at=now,
            last_active_at=now,
            revoked_at=None,
        )
        await self._session.execute(
            insert(login_session).values(**values_of(stored, lists=("amr",)))
        )
        return stored

    async def get_session(
        self, session_id: str, *, for_update: bool = False
    ) -> StoredSession | None:
        query = select(login_session).where(login_session.c.id == session_id)
        return await fetch_one(self._session, query, _session, for_update=for_update)

    async def open_sessions_of(self, user_id: str) -> list[StoredSession]:
        rows = await self._session.execute(
            select(login_session).where(
                login_session.c.user_id == user_id, login_session.c.revoked_at.is_(None)
            )
        )
        return [_session(r._mapping) for r in rows]

    async def touch_session(self, session_id: str, now: datetime) -> None:
        await self._session.execute(
            update(login_session).where(login_session.c.id == session_id).values(last_active_at=now)
        )

    async def revoke_session(self, session_id: str, reason: str, now: datetime) -> bool:
        """Mark the session revoked; False when it already was."""
        result = await self._session.execute(
            update(login_session)
            .where(login_session.c.id == session_id, login_session.c.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason)
            .returning(login_session.c.id)
        )
        return result.one_or_none() is not None

    async def add_refresh_token(self, token_hash: str, session_id: str, now: datetime) -> None:
        await self._session.execute(
            insert(refresh_token).values(
                token_hash=token_hash, session_id=session_id, issued_at=now
            )
        )

    async def get_refresh_token(self, token_hash: str) -> StoredRefreshToken | None:
        query = select(refresh_token).where(refresh_token.c.token_hash == token_hash)
        return await fetch_one(self._session, query, _refresh_token, for_update=True)

    async def mark_refresh_token_used(self, token_hash: str, now: datetime) -> None:
        await self._session.execute(
            update(refresh_token)
            .where(refresh_token.c.token_hash == token_hash)
            .values(used_at=now)
        )

    # --- break-glass grants ----------------------------------------------------

    async def add_break_glass_grant(self, grant: StoredBreakGlassGrant) -> StoredBreakGlassGrant:
        await self._session.execute(insert(break_glass_grant).values(**values_of(grant)))
        return grant

    async def active_break_glass_grants(
        self, session_id: str, now: datetime
    ) -> list[StoredBreakGlassGrant]:
        """The session's grants that have not expired at `now`, oldest first."""
        rows = await self._session.execute(
            select(break_glass_grant)
            .where(
                break_glass_grant.c.session_id == session_id,
                break_glass_grant.c.expires_at > now,
            )
            .order_by(break_glass_grant.c.granted_at, break_glass_grant.c.id)
        )
        return [record_of(StoredBreakGlassGrant, r._mapping) for r in rows]
