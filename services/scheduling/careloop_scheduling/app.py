"""Composition root of the scheduling service."""

from __future__ import annotations

from fastapi import FastAPI

from careloop_kit.auth import JwksSource
from careloop_kit.clock import Clock
from careloop_kit.db.timers import Timers
from careloop_kit.service import Runtime, ServiceSpec, create_service_app
from careloop_scheduling.api.appointments import router as appointments_router
from careloop_scheduling.api.attendance import router as attendance_router
from careloop_scheduling.api.catalog import router as catalog_router
from careloop_scheduling.api.reminder_settings import router as reminder_settings_router
from careloop_scheduling.api.waitlist import router as waitlist_router
from careloop_scheduling.domain.waitlist import WAITLIST_TIMER_KIND
from careloop_scheduling.handlers.locations import LOCATIONS_CONSUMER
from careloop_scheduling.handlers.reminders import (
    WORKER_KEY,
    build_reminder_worker,
    reminder_timers,
)
from careloop_scheduling.handlers.replies import REPLIES_CONSUMER
from careloop_scheduling.handlers.waitlist import WAITLIST_CONSUMER, waitlist_round_handler
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.tables import metadata, platform
from careloop_scheduling.usecases.common import SETTINGS_KEY
from careloop_scheduling.usecases.timers import TIMERS_KEY

SERVICE = "scheduling"


def build_spec(settings: SchedulingSettings) -> ServiceSpec:
    async def on_startup(runtime: Runtime) -> None:
        runtime.state[SETTINGS_KEY] = settings
        runtime.state[TIMERS_KEY] = Timers(platform, clock=runtime.clock)
        # One worker fires every scheduling timer, the waitlist's offer rounds included.
        runtime.state[WORKER_KEY] = build_reminder_worker(
            runtime, settings, extra={WAITLIST_TIMER_KIND: waitlist_round_handler(runtime)}
        )

    return ServiceSpec(
        name=SERVICE,
        description=(
            "Providers, appointment types, weekly availability, open slots and the "
            "appointment lifecycle (FHIR Appointment statuses), reminder sequences and "
            "automatic no-show marking on durable timers, patients' attendance history, "
            "two-way confirmation (confirm, reschedule offers) from patients' replies, "
            "the waitlist (freed times offered in order, the first acceptance books)."
        ),
        metadata=metadata,
        tables=platform,
        routers=[
            catalog_router,
            appointments_router,
            attendance_router,
            reminder_settings_router,
            waitlist_router,
        ],
        consumers=[LOCATIONS_CONSUMER, REPLIES_CONSUMER, WAITLIST_CONSUMER],
        on_startup=on_startup,
        background=[reminder_timers],
        verifies_tokens=True,
    )


def create_app(
    settings: SchedulingSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks: JwksSource | None = None,
) -> FastAPI:
    """The scheduling API with its runtime lifespan.

    `jwks` replaces identity's published keys (tests sign their own tokens).
    """
    settings = settings or SchedulingSettings()
    return create_service_app(build_spec(settings), settings, clock=clock, jwks=jwks)
