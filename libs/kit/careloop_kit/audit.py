"""Audit hooks: one call records a PHI access or change as an audit event.

On success the event is staged in the caller's transaction (through the
outbox), so the change and its audit record commit together. When the work
fails, the caller's transaction rolls back, so the failure is recorded in a
transaction of its own: the trail is honest about denials and errors too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import uuid4

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careloop_contracts import AccessRecorded
from careloop_kit.auth.principal import Principal
from careloop_kit.bus.outbox import Outbox
from careloop_kit.clock import Clock, SystemClock
from careloop_kit.errors import ProblemError

AUDIT_RECORDER_KEY = "audit"
"""Where every service runtime keeps its `AuditRecorder` (`runtime.state[...]`)."""


@dataclass
class AuditEntry:
    """What the audited operation touched; filled in as the work learns it.

    The fields of the record it becomes are the contract's (`AccessRecorded`); the entry
    holds only what the operation knows, and `records` builds the events from it.
    """

    action: str
    resource_type: str
    phi_categories: list[str]
    patient_id: str | None = None
    resource_id: str | None = None
    query_fingerprint: str | None = None
    extra_patient_ids: list[str] = field(default_factory=list)
    outcome: str = "success"
    outcome_detail: str | None = None
    """What the record says of the outcome, in the operation's words (`scope` records
    `outcome` with it when the work returns)."""

    def refuse(self, detail: str) -> None:
        """The operation refuses, in its own words: recorded as `denied` with `detail`.
        A step that answers its refusal after committing what it changed (a failed
        sign-in's counter) returns, and the refusal commits with it; one that raises
        has it recorded in a transaction of its own, with these words."""
        self.outcome = "denied"
        self.outcome_detail = detail

    def disclose_patients(self, patient_ids: Iterable[str]) -> None:
        """Name every patient whose data a query returned: the first as `patient_id`, the
        others (each once, in order) as `extra_patient_ids`, so each one's trail shows it."""
        patients = list(dict.fromkeys(patient_ids))
        if patients:
            self.patient_id = patients[0]
            self.extra_patient_ids = patients[1:]

    def records(
        self,
        principal: Principal,
        *,
        source_service: str,
        occurred_at: datetime,
        outcome: str = "success",
        outcome_detail: str | None = None,
        request_id: str | None = None,
        source_ip: str | None = None,
    ) -> list[AccessRecorded]:
        """One access record per patient touched (one with no patient for a search that
        found none); the first names the resource, the others their patient."""
        return [
            AccessRecorded(
                audit_id=uuid4(),
                occurred_at=occurred_at,
                org_id=principal.org_id,
                actor_id=principal.actor_id,
                actor_type=principal.actor_type,
                action=self.action,
                outcome=outcome,
                outcome_detail=outcome_detail,
                patient_id=patient_id,
                resource_type=self.resource_type,
                resource_id=self.resource_id if patient_id == self.patient_id else patient_id,
                phi_categories=tuple(self.phi_categories),
                purpose_of_use=principal.purpose_of_use,
                source_service=source_service,
                source_ip=source_ip,
                request_id=request_id,
                query_fingerprint=self.query_fingerprint,
            )
            for patient_id in [self.patient_id, *self.extra_patient_ids]
        ]


def recorder_of(runtime: Any) -> AuditRecorder:
    """The audit recorder every service runtime holds (`runtime.state[AUDIT_RECORDER_KEY]`)."""
    recorder: AuditRecorder = runtime.state[AUDIT_RECORDER_KEY]
    return recorder


def request_id_of(request: Request) -> str | None:
    """The request's id (set by the kit's middleware; None outside it)."""
    value = getattr(request.state, "request_id", None)
    return None if value is None else str(value)


def request_meta(request: Request) -> dict[str, Any]:
    """Where a request came from, as the audit trail records it."""
    return {
        "request_id": request_id_of(request),
        "source_ip": request.client.host if request.client else None,
    }


def fingerprint_query(keys: list[str]) -> str:
    """Which search keys a query used (never their values)."""
    return "+".join(sorted(keys)) or "none"


class AuditRecorder:
    """Records PHI accesses of one service."""

    def __init__(
        self,
        outbox: Outbox,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        clock: Clock | None = None,
    ) -> None:
        self._outbox = outbox
        self._sessionmaker = sessionmaker
        self._clock = clock or SystemClock()

    async def record(
        self,
        session: AsyncSession,
        principal: Principal,
        entry: AuditEntry,
        *,
        outcome: str | None = None,
        outcome_detail: str | None = None,
        request_id: str | None = None,
        source_ip: str | None = None,
    ) -> None:
        """Stage one audit event per patient touched in `session`'s transaction; the
        outcome and its detail are the entry's where none is given."""
        events = entry.records(
            principal,
            source_service=self._outbox.service,
            occurred_at=self._clock.now(),
            outcome=outcome or entry.outcome,
            outcome_detail=entry.outcome_detail if outcome_detail is None else outcome_detail,
            request_id=request_id,
            source_ip=source_ip,
        )
        for event in events:
            # Keyed by patient (or by tenant when no patient was touched), so one
            # patient's trail stays in order.
            await self._outbox.add(session, event, org_id=principal.org_id)

    @asynccontextmanager
    async def scope(
        self,
        session: AsyncSession,
        principal: Principal,
        entry: AuditEntry,
        *,
        request_id: str | None = None,
        source_ip: str | None = None,
    ) -> AsyncIterator[AuditEntry]:
        """Audit the enclosed work: its outcome (the entry's: success, or the refusal it
        returns with) in its transaction; a failure in a new one, in the words of the
        entry's refusal when the work gave one."""
        try:
            yield entry
        except ProblemError as exc:
            outcome = "denied" if exc.status in (401, 403) else "error"
            detail = str(exc.status)
            if entry.outcome_detail is not None and entry.outcome != "success":
                outcome, detail = entry.outcome, entry.outcome_detail
            await self.record_failure(principal, entry, outcome, detail, request_id, source_ip)
            raise
        except Exception as exc:
            await self.record_failure(
                principal, entry, "error", type(exc).__name__, request_id, source_ip
            )
            raise
        await self.record(session, principal, entry, request_id=request_id, source_ip=source_ip)

    async def record_failure(
        self,
        principal: Principal,
        entry: AuditEntry,
        outcome: str,
        detail: str,
        request_id: str | None,
        source_ip: str | None,
    ) -> None:
        """Record a refused or failed access in a transaction of its own."""
        async with self._sessionmaker() as session, session.begin():
            await self.record(
                session,
                principal,
                entry,
                outcome=outcome,
                outcome_detail=detail,
                request_id=request_id,
                source_ip=source_ip,
            )
