"""What every kind of appointment timer shares: the `Timers` of the runtime and the
cancellation of all of an appointment's pending timers.

Every timer of an appointment (its reminder touches and its no-show check) is keyed
`<appointment_id>:<something>`, so one prefix lookup finds them all.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.db.timers import Timers
from careloop_kit.service import Runtime
from careloop_scheduling.store.repository import Repositories

TIMERS_KEY = "scheduling_timers"


def timers_of(runtime: Runtime) -> Timers:
    timers: Timers = runtime.state[TIMERS_KEY]
    return timers


def appointment_key_prefix(appointment_id: str) -> str:
    return f"{appointment_id}:"


async def cancel_appointment_timers(
    timers: Timers,
    session: AsyncSession,
    repos: Repositories,
    appointment_id: str,
    *,
    sparing: str | None = None,
) -> int:
    """Cancel every pending timer of the appointment (reminders and the no-show check)
    except the key `sparing` (the timer firing right now, which the kit marks fired:
    cancelling it too would make it look parked); returns how many.

    Looks the keys up rather than recomputing them, so a touch added or removed in the
    settings since the booking is cancelled all the same."""
    keys = await repos.timers.pending_keys(appointment_key_prefix(appointment_id))
    return await timers.cancel_all(session, [key for key in keys if key != sparing])
