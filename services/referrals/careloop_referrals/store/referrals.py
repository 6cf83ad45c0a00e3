"""Referrals and their transitions: saves with optimistic versions, the history, listings.

Ciphertexts arrive sealed: the use cases seal and open through the kit's field port, so
the repository stores bytes and never sees a key.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from careloop_kit.repository import Repository
from careloop_kit.rows import record_of, values_of
from careloop_referrals.domain.authorization import Authorization
from careloop_referrals.domain.loop_closure import ReferralHistory
from careloop_referrals.domain.outcome import OutcomeReport
from careloop_referrals.domain.referral import Direction, Referral, Stage, Transition, Urgency
from careloop_referrals.store.authorizations import authorization_of
from careloop_referrals.store.outcomes import report_of
from careloop_referrals.store.tables import (
    referral,
    referral_authorization,
    referral_outcome,
    referral_transition,
)

_ENUMS = {"direction": Direction, "urgency": Urgency, "stage": Stage}


class StaleReferral(Exception):
    """The referral changed since it was read: another step won."""


@dataclass(frozen=True)
class StoredTransition:
    id: str
    transition: Transition
    reason_ct: bytes | None


@dataclass(frozen=True)
class ReferralDetails:
    """What a referral's view shows beside its row and history, still sealed."""

    reason_ct: bytes | None
    authorization: Authorization | None
    number_ct: bytes | None
    outcome: OutcomeReport | None
    note_ct: bytes | None


_AUTHORIZATION, _OUTCOME = "authorization_", "outcome_"

# One round trip for the referral's reason and its one authorization and one outcome
# report (each at most one row per referral), instead of one query each.
_DETAILS = (
    select(
        referral.c.reason_ct,
        *(column.label(_AUTHORIZATION + column.name) for column in referral_authorization.c),
        *(column.label(_OUTCOME + column.name) for column in referral_outcome.c),
    )
    .select_from(
        referral.outerjoin(
            referral_authorization,
            (referral_authorization.c.referral_id == referral.c.id)
            & (referral_authorization.c.org_id == referral.c.org_id),
        ).outerjoin(
            referral_outcome,
            (referral_outcome.c.referral_id == referral.c.id)
            & (referral_outcome.c.org_id == referral.c.org_id),
        )
    )
    .where(referral.c.org_id == bindparam("org_id"), referral.c.id == bindparam("referral_id"))
)


def _prefixed(row: Any, prefix: str) -> dict[str, Any] | None:
    """The columns of one joined table, by their own names; None when it had no row."""
    if row[prefix + "referral_id"] is None:
        return None
    return {key[len(prefix) :]: value for key, value in row.items() if key.startswith(prefix)}


def _referral(row: Any) -> Referral:
    return record_of(Referral, row, convert=_ENUMS)


def _transition(row: Any) -> StoredTransition:
    from_stage = row["from_stage"]
    return StoredTransition(
        row["id"],
        Transition(
            from_stage=None if from_stage is None else Stage(from_stage),
            to_stage=Stage(row["to_stage"]),
            actor=row["actor"],
            at=row["at"],
        ),
        row["reason_ct"],
    )


class ReferralRepository(Repository):
    async def add(
        self,
        new: Referral,
        opened: Transition,
        *,
        source: str,
        reason_ct: bytes | None,
        transition_id: str,
    ) -> None:
        await self._session.execute(
            insert(referral).values(
                **values_of(new),
                source=source,
                reason_ct=reason_ct,
                updated_at=new.created_at,
            )
        )
        await self.add_transition(new, opened, transition_id=transition_id, reason_ct=None)

    async def get(
        self, org_id: str, referral_id: str, *, for_update: bool = False
    ) -> Referral | None:
        row = await self._row(referral, org_id, referral_id, for_update=for_update)
        return None if row is None else _referral(row)

    async def details(self, org_id: str, referral_id: str) -> ReferralDetails:
        row = (
            (await self._session.execute(_DETAILS, {"org_id": org_id, "referral_id": referral_id}))
            .one()
            ._mapping
        )
        authorization = _prefixed(row, _AUTHORIZATION)
        outcome = _prefixed(row, _OUTCOME)
        return ReferralDetails(
            reason_ct=row["reason_ct"],
            authorization=None if authorization is None else authorization_of(authorization),
            number_ct=None if authorization is None else authorization["number_ct"],
            outcome=None if outcome is None else report_of(outcome),
            note_ct=None if outcome is None else outcome["note_ct"],
        )

    async def save(
        self,
        moved: Referral,
        step: Transition,
        *,
        previous_version: int,
        transition_id: str,
        reason_ct: bytes | None,
    ) -> None:
        """Store a step and the referral after it; `StaleReferral` when another step
        changed the referral since it was read (the version decides, not the lock)."""
        values = values_of(moved, leave_out=("id", "org_id", "created_at"))
        await self._save_version(moved, previous_version, updated_at=step.at, **values)
        await self.add_transition(moved, step, transition_id=transition_id, reason_ct=reason_ct)

    async def relink(self, moved: Referral, *, previous_version: int, now: datetime) -> None:
        """Store a new appointment link (no stage change, so no transition row)."""
        await self._save_version(
            moved,
            previous_version,
            appointment_id=moved.appointment_id,
            version=moved.version,
            updated_at=now,
        )

    async def _save_version(self, moved: Referral, previous_version: int, **values: Any) -> None:
        result = await self._session.execute(
            update(referral)
            .where(
                referral.c.id == moved.id,
                referral.c.org_id == moved.org_id,
                referral.c.version == previous_version,
            )
            .values(**values)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise StaleReferral(moved.id)

    async def add_transition(
        self, of: Referral, step: Transition, *, transition_id: str, reason_ct: bytes | None
    ) -> None:
        await self._session.execute(
            insert(referral_transition).values(
                id=transition_id,
                referral_id=of.id,
                org_id=of.org_id,
                from_stage=step.from_stage,
                to_stage=step.to_stage,
                actor=step.actor,
                at=step.at,
                reason_ct=reason_ct,
            )
        )

    async def transitions(self, org_id: str, referral_id: str) -> list[StoredTransition]:
        rows = await self._session.execute(
            select(referral_transition)
            .where(
                referral_transition.c.org_id == org_id,
                referral_transition.c.referral_id == referral_id,
            )
            .order_by(referral_transition.c.seq)
        )
        return [_transition(row._mapping) for row in rows]

    async def by_appointment(self, org_id: str, appointment_id: str) -> Referral | None:
        row = (
            await self._session.execute(
                select(referral)
                .where(referral.c.org_id == org_id, referral.c.appointment_id == appointment_id)
                .with_for_update()
            )
        ).first()
        return None if row is None else _referral(row._mapping)

    async def page(
        self,
        org_id: str,
        *,
        locations: Collection[str] | None,
        hidden_locations: Collection[str] = (),
        patient_id: str | None = None,
        stages: Collection[Stage] = (),
        direction: Direction | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[Referral]:
        """Referrals in id order after `after` (keyset paging); none at
        `hidden_locations`, so a page is never short because of them."""
        conditions: list[Any] = [referral.c.org_id == org_id]
        if locations is not None:
            conditions.append(referral.c.location_id.in_(list(locations)))
        if hidden_locations:
            conditions.append(referral.c.location_id.not_in(list(hidden_locations)))
        if patient_id is not None:
            conditions.append(referral.c.patient_id == patient_id)
        if stages:
            conditions.append(referral.c.stage.in_([s.value for s in stages]))
        if direction is not None:
            conditions.append(referral.c.direction == direction.value)
        if after is not None:
            conditions.append(referral.c.id > after)
        rows = await self._session.execute(
            select(referral).where(*conditions).order_by(referral.c.id).limit(limit)
        )
        return [_referral(row._mapping) for row in rows]

    async def histories(
        self,
        org_id: str,
        *,
        created_from: datetime,
        created_to: datetime,
        locations: Collection[str] | None,
        hidden_locations: Collection[str] = (),
    ) -> list[ReferralHistory]:
        """Every referral created in [from, to) with its transitions (no reasons): the
        input of the loop-closure figures."""
        conditions: list[Any] = [
            referral.c.org_id == org_id,
            referral.c.created_at >= created_from,
            referral.c.created_at < created_to,
        ]
        if locations is not None:
            conditions.append(referral.c.location_id.in_(list(locations)))
        if hidden_locations:
            conditions.append(referral.c.location_id.not_in(list(hidden_locations)))
        referrals = [
            _referral(row._mapping)
            for row in await self._session.execute(select(referral).where(*conditions))
        ]
        steps: dict[str, list[Transition]] = {r.id: [] for r in referrals}
        if referrals:
            rows = await self._session.execute(
                select(referral_transition)
                .where(
                    referral_transition.c.org_id == org_id,
                    referral_transition.c.referral_id.in_(list(steps)),
                )
                .order_by(referral_transition.c.seq)
            )
            for row in rows:
                steps[row.referral_id].append(_transition(row._mapping).transition)
        return [ReferralHistory(r, tuple(steps[r.id])) for r in referrals]
