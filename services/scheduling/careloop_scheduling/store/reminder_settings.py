"""Reminder settings per organization, location and appointment type."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from careloop_kit.repository import Repository
from careloop_scheduling.domain.reminder_settings import Level, ReminderSettings
from careloop_scheduling.domain.reminders import QuietHours, TouchOverride
from careloop_scheduling.store.tables import reminder_setting


class ReminderSettingsRepository(Repository):
    """One settings document per level and scope (organization, location, type)."""

    async def get(self, org_id: str, level: Level, scope_id: str = "") -> ReminderSettings | None:
        row = (
            await self._session.execute(
                select(reminder_setting).where(
                    reminder_setting.c.org_id == org_id,
                    reminder_setting.c.level == level.value,
                    reminder_setting.c.scope_id == scope_id,
                )
            )
        ).first()
        return None if row is None else _reminder_settings(row._mapping)

    async def put(
        self, org_id: str, level: Level, scope_id: str, item: ReminderSettings, now: datetime
    ) -> None:
        values: dict[str, Any] = {
            "send_time": item.send_time,
            "min_spacing_minutes": (
                None if item.min_spacing is None else int(item.min_spacing.total_seconds() // 60)
            ),
            "quiet_start": None if item.quiet_hours is None else item.quiet_hours.start,
            "quiet_end": None if item.quiet_hours is None else item.quiet_hours.end,
            "touches": {name: _touch_json(o) for name, o in item.touches.items()},
            "updated_at": now,
        }
        statement = pg_insert(reminder_setting).values(
            org_id=org_id, level=level.value, scope_id=scope_id, **values
        )
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[
                    reminder_setting.c.org_id,
                    reminder_setting.c.level,
                    reminder_setting.c.scope_id,
                ],
                set_=values,
            )
        )


def _touch_json(change: TouchOverride) -> dict[str, Any]:
    return {
        "enabled": change.enabled,
        "days_before": change.days_before,
        "send_time": None if change.send_time is None else change.send_time.isoformat(),
    }


def _reminder_settings(m: Any) -> ReminderSettings:
    touches = {
        name: TouchOverride(
            enabled=t.get("enabled"),
            days_before=t.get("days_before"),
            send_time=None if t.get("send_time") is None else time.fromisoformat(t["send_time"]),
        )
        for name, t in (m["touches"] or {}).items()
    }
    quiet = (
        None
        if m["quiet_start"] is None or m["quiet_end"] is None
        else QuietHours(m["quiet_start"], m["quiet_end"])
    )
    spacing = m["min_spacing_minutes"]
    return ReminderSettings(
        send_time=m["send_time"],
        min_spacing=None if spacing is None else timedelta(minutes=spacing),
        touches=touches,
        quiet_hours=quiet,
    )
