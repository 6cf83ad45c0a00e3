"""Composition root of the referrals service."""

from __future__ import annotations

from careloop_kit.db.timers import Timers
from careloop_kit.service import Runtime, ServiceAppFactory, ServiceSpec
from careloop_referrals.api.clocks import router as clocks_router
from careloop_referrals.api.directory import router as directory_router
from careloop_referrals.api.referrals import router as referrals_router
from careloop_referrals.channels import report_channels
from careloop_referrals.handlers.appointments import APPOINTMENTS_CONSUMER
from careloop_referrals.handlers.clocks import WORKER_KEY, build_clock_worker, stage_clocks
from careloop_referrals.handlers.locations import LOCATIONS_CONSUMER
from careloop_referrals.settings import ReferralsSettings
from careloop_referrals.store.tables import metadata, platform
from careloop_referrals.usecases.clocks import TIMERS_KEY
from careloop_referrals.usecases.common import SETTINGS_KEY
from careloop_referrals.usecases.outcomes import CHANNELS_KEY

SERVICE = "referrals"


def build_spec(settings: ReferralsSettings) -> ServiceSpec:
    async def on_startup(runtime: Runtime) -> None:
        runtime.state[SETTINGS_KEY] = settings
        runtime.state[TIMERS_KEY] = Timers(platform, clock=runtime.clock)
        runtime.state[WORKER_KEY] = build_clock_worker(runtime, settings)
        runtime.state[CHANNELS_KEY] = report_channels(settings, runtime.vault, runtime.clock)

    return ServiceSpec(
        name=SERVICE,
        description=(
            "Closed-loop referrals: inbound and outbound, the provider directory, each "
            "stage with its clock on durable timers (stalled, escalated), until the "
            "referring provider has the outcome."
        ),
        metadata=metadata,
        tables=platform,
        # The directory's and the clocks' fixed paths come before `/referrals/{id}`.
        routers=[directory_router, clocks_router, referrals_router],
        consumers=[APPOINTMENTS_CONSUMER, LOCATIONS_CONSUMER],
        on_startup=on_startup,
        background=[stage_clocks],
        verifies_tokens=True,
    )


create_app = ServiceAppFactory(build_spec, ReferralsSettings)
