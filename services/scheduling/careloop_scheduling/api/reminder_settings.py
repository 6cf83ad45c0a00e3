"""Reminder settings: the organization's, and overrides per location and appointment type.

Settings hold no PHI, so reads are organization-wide for anyone holding
`scheduling:read` (like the catalog). Writes need `scheduling:manage`; the
organization level changes every location's reminders, so it also needs every
location in scope, and a location's level needs that location. Every read and
write is audited (resource `ReminderSettings`, no PHI category): who changed what
patients are told, and when, matters when a patient says they were never reminded.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from careloop_kit.audit import AuditEntry
from careloop_kit.auth import ALL_LOCATIONS, AuthenticatedPrincipal
from careloop_kit.problems import Forbidden, NotFound
from careloop_scheduling.api.common import Context, ManageContext, ReadContext
from careloop_scheduling.api.schemas import (
    EffectiveReminders,
    EffectiveTouch,
    ReminderSettingsIn,
    ReminderSettingsRead,
    TouchSettings,
)
from careloop_scheduling.domain.reminder_settings import (
    AT_BOOKING_TOUCHES,
    KNOWN_TOUCHES,
    Level,
    ReminderSettings,
    effective,
)
from careloop_scheduling.domain.reminders import (
    InvalidReminderConfig,
    QuietHours,
    TouchOverride,
)
from careloop_scheduling.store.repository import Repositories
from careloop_scheduling.usecases.catalog import load_type
from careloop_scheduling.usecases.common import InvalidScheduling

router = APIRouter(tags=["reminder settings"])

RESOURCE = "ReminderSettings"


def _to_domain(body: ReminderSettingsIn) -> ReminderSettings:
    """The stored form of a settings document; `InvalidScheduling` (422) if it breaks a rule."""
    unknown = sorted(set(body.touches) - set(KNOWN_TOUCHES))
    if unknown:
        raise InvalidScheduling(
            f"Unknown touch(es) {', '.join(unknown)}; known: {', '.join(KNOWN_TOUCHES)}."
        )
    for name in AT_BOOKING_TOUCHES & set(body.touches):
        change = body.touches[name]
        if change.days_before is not None or change.send_time is not None:
            raise InvalidScheduling(f"`{name}` fires at booking: only `enabled` may be set.")
    if (body.quiet_hours_start is None) != (body.quiet_hours_end is None):
        raise InvalidScheduling("Set quiet_hours_start and quiet_hours_end together.")
    try:
        quiet = (
            None
            if body.quiet_hours_start is None or body.quiet_hours_end is None
            else QuietHours(body.quiet_hours_start, body.quiet_hours_end)
        )
        settings = ReminderSettings(
            send_time=body.send_time,
            min_spacing=(
                None
                if body.min_spacing_minutes is None
                else timedelta(minutes=body.min_spacing_minutes)
            ),
            touches={
                name: TouchOverride(c.enabled, c.days_before, c.send_time)
                for name, c in body.touches.items()
            },
            quiet_hours=quiet,
        )
        # Resolving against the default catches what only the planner checks
        # (a tz-aware send time, for instance) now rather than at the next booking.
        effective(settings)
    except InvalidReminderConfig as exc:
        raise InvalidScheduling(str(exc)) from exc
    return settings


def _read(
    level: Level,
    scope_id: str | None,
    stored: ReminderSettings | None,
    chain: tuple[ReminderSettings | None, ...],
) -> ReminderSettingsRead:
    sequence, quiet = effective(*chain)
    mine = stored or ReminderSettings()
    return ReminderSettingsRead(
        level=level.value,
        scope_id=scope_id,
        send_time=mine.send_time,
        min_spacing_minutes=(
            None if mine.min_spacing is None else int(mine.min_spacing.total_seconds() // 60)
        ),
        quiet_hours_start=None if mine.quiet_hours is None else mine.quiet_hours.start,
        quiet_hours_end=None if mine.quiet_hours is None else mine.quiet_hours.end,
        touches={
            name: TouchSettings(enabled=o.enabled, days_before=o.days_before, send_time=o.send_time)
            for name, o in mine.touches.items()
        },
        effective=EffectiveReminders(
            send_time=sequence.send_time,
            min_spacing_minutes=int(sequence.min_spacing.total_seconds() // 60),
            quiet_hours_start=quiet.start,
            quiet_hours_end=quiet.end,
            touches=[
                EffectiveTouch(
                    name=t.name,
                    kind=t.kind.value,
                    enabled=t.enabled,
                    days_before=t.days_before,
                    send_time=t.send_time,
                )
                for t in sequence.touches
            ],
        ),
    )


async def _chain(
    repos: Repositories, org_id: str, level: Level, scope_id: str
) -> tuple[tuple[ReminderSettings | None, ...], ReminderSettings | None]:
    """The levels above and including this one (in resolve order), and this one's."""
    org = await repos.reminder_settings.get(org_id, Level.ORGANIZATION)
    if level is Level.ORGANIZATION:
        return (org,), org
    own = await repos.reminder_settings.get(org_id, level, scope_id)
    if level is Level.LOCATION:
        return (org, own), own
    return (org, None, own), own


async def _known_scope(repos: Repositories, org_id: str, level: Level, scope_id: str) -> None:
    if level is Level.LOCATION and await repos.locations.get(org_id, scope_id) is None:
        raise NotFound(
            f"Scheduling has not heard of location {scope_id} from identity yet "
            "(create the location in identity first)."
        )
    if level is Level.APPOINTMENT_TYPE:
        await load_type(repos, org_id, scope_id)


def _check_write_scope(principal: AuthenticatedPrincipal, level: Level, scope_id: str) -> None:
    if level is Level.ORGANIZATION and ALL_LOCATIONS not in principal.locations:
        raise Forbidden("Organization-wide reminder settings need every location in scope.")
    if level is Level.LOCATION:
        principal.can_access_location(scope_id)


async def _get(level: Level, scope_id: str, ctx: Context) -> ReminderSettingsRead:
    principal, repos = ctx.principal, ctx.repos
    entry = AuditEntry(
        action="read", resource_type=RESOURCE, phi_categories=[], resource_id=f"{level}:{scope_id}"
    )
    async with ctx.audited(entry):
        await _known_scope(repos, principal.org_id, level, scope_id)
        chain, own = await _chain(repos, principal.org_id, level, scope_id)
    return _read(level, scope_id or None, own, chain)


async def _put(
    level: Level, scope_id: str, body: ReminderSettingsIn, ctx: Context
) -> ReminderSettingsRead:
    principal, repos = ctx.principal, ctx.repos
    entry = AuditEntry(
        action="update",
        resource_type=RESOURCE,
        phi_categories=[],
        resource_id=f"{level}:{scope_id}",
    )
    async with ctx.audited(entry):
        _check_write_scope(principal, level, scope_id)
        await _known_scope(repos, principal.org_id, level, scope_id)
        settings = _to_domain(body)
        await repos.reminder_settings.put(
            principal.org_id, level, scope_id, settings, ctx.runtime.clock.now()
        )
        chain, own = await _chain(repos, principal.org_id, level, scope_id)
    return _read(level, scope_id or None, own, chain)


@router.get("/reminder-settings", response_model=ReminderSettingsRead)
async def read_org_reminder_settings(ctx: ReadContext) -> ReminderSettingsRead:
    """Read the organization's reminder settings and the effective sequence."""
    return await _get(Level.ORGANIZATION, "", ctx)


@router.put("/reminder-settings", response_model=ReminderSettingsRead)
async def put_org_reminder_settings(
    body: ReminderSettingsIn, ctx: ManageContext
) -> ReminderSettingsRead:
    """Replace the organization's reminder settings (applies to bookings made from now on)."""
    return await _put(Level.ORGANIZATION, "", body, ctx)


@router.get("/locations/{location_id}/reminder-settings", response_model=ReminderSettingsRead)
async def read_location_reminder_settings(
    location_id: str, ctx: ReadContext
) -> ReminderSettingsRead:
    """Read a location's reminder overrides and its effective sequence."""
    return await _get(Level.LOCATION, location_id, ctx)


@router.put("/locations/{location_id}/reminder-settings", response_model=ReminderSettingsRead)
async def put_location_reminder_settings(
    location_id: str, body: ReminderSettingsIn, ctx: ManageContext
) -> ReminderSettingsRead:
    """Replace a location's reminder overrides."""
    return await _put(Level.LOCATION, location_id, body, ctx)


@router.get("/appointment-types/{type_id}/reminder-settings", response_model=ReminderSettingsRead)
async def read_type_reminder_settings(type_id: str, ctx: ReadContext) -> ReminderSettingsRead:
    """Read an appointment type's reminder overrides (effective: organization, then type)."""
    return await _get(Level.APPOINTMENT_TYPE, type_id, ctx)


@router.put("/appointment-types/{type_id}/reminder-settings", response_model=ReminderSettingsRead)
async def put_type_reminder_settings(
    type_id: str, body: ReminderSettingsIn, ctx: ManageContext
) -> ReminderSettingsRead:
    """Replace an appointment type's reminder overrides (most specific level)."""
    return await _put(Level.APPOINTMENT_TYPE, type_id, body, ctx)
