"""Composition root of the tasks service."""

from __future__ import annotations

from careloop_kit.db.timers import Timers
from careloop_kit.service import Runtime, ServiceAppFactory, ServiceSpec
from careloop_tasks.api.admin import router as admin_router
from careloop_tasks.api.tasks import router as tasks_router
from careloop_tasks.handlers.events import (
    CAREGAPS_CONSUMER,
    MESSAGING_CONSUMER,
    REFERRALS_CONSUMER,
)
from careloop_tasks.handlers.overdue import WORKER_KEY, build_overdue_worker, due_times
from careloop_tasks.settings import TasksSettings
from careloop_tasks.store.tables import metadata, platform
from careloop_tasks.usecases.common import SETTINGS_KEY
from careloop_tasks.usecases.lifecycle import TIMERS_KEY
from careloop_tasks.usecases.rules import load_defaults

SERVICE = "tasks"


def build_spec(settings: TasksSettings) -> ServiceSpec:
    async def on_startup(runtime: Runtime) -> None:
        runtime.state[SETTINGS_KEY] = settings
        runtime.state[TIMERS_KEY] = Timers(platform, clock=runtime.clock)
        runtime.state[WORKER_KEY] = build_overdue_worker(runtime, settings)
        load_defaults(runtime)

    return ServiceSpec(
        name=SERVICE,
        description=(
            "Staff worklists: tasks made by the organization's rules from other services' "
            "events and by hand, on queues per role and location, assigned round-robin or "
            "claimed, with due times reported when they pass."
        ),
        metadata=metadata,
        tables=platform,
        # The fixed paths (rules, queues, counts) come before `/tasks/{id}`.
        routers=[admin_router, tasks_router],
        consumers=[REFERRALS_CONSUMER, MESSAGING_CONSUMER, CAREGAPS_CONSUMER],
        on_startup=on_startup,
        background=[due_times],
        verifies_tokens=True,
    )


create_app = ServiceAppFactory(build_spec, TasksSettings)
