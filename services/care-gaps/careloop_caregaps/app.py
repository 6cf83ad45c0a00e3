"""Composition root of the care-gaps service."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from careloop_caregaps.api.campaigns import router as campaigns_router
from careloop_caregaps.api.evaluations import router as evaluations_router
from careloop_caregaps.api.gaps import router as gaps_router
from careloop_caregaps.api.measures import router as measures_router
from careloop_caregaps.api.population import router as population_router
from careloop_caregaps.handlers.events import (
    APPOINTMENTS_CONSUMER,
    FACTS_CONSUMER,
    LOCATIONS_CONSUMER,
)
from careloop_caregaps.handlers.steps import WORKER_KEY, build_step_worker, campaign_steps
from careloop_caregaps.patients_client import HttpDemographics
from careloop_caregaps.settings import CaregapsSettings
from careloop_caregaps.store.library_files import load_library
from careloop_caregaps.store.tables import metadata, platform
from careloop_caregaps.usecases.answers import TIMERS_KEY
from careloop_caregaps.usecases.common import (
    DEMOGRAPHICS_KEY,
    LIBRARY_KEY,
    SETTINGS_KEY,
    Demographics,
)
from careloop_caregaps.usecases.jobs import evaluation_jobs
from careloop_kit.auth import JwksSource, ServiceTokenSource
from careloop_kit.clock import Clock
from careloop_kit.db.timers import Timers
from careloop_kit.service import Runtime, ServiceSpec, create_service_app
from careloop_kit.settings import internal_verify

SERVICE = "caregaps"


def build_spec(
    settings: CaregapsSettings, *, demographics: Demographics | None = None
) -> ServiceSpec:
    async def on_startup(runtime: Runtime) -> None:
        runtime.state[SETTINGS_KEY] = settings
        runtime.state[TIMERS_KEY] = Timers(platform, clock=runtime.clock)
        runtime.state[WORKER_KEY] = build_step_worker(runtime, settings)
        # A library that does not validate stops the start: better no service than
        # gaps decided by a broken measure.
        directory = None if settings.measures_dir is None else Path(settings.measures_dir)
        runtime.state[LIBRARY_KEY] = load_library(directory)
        if demographics is None:
            # Patients and identity are Careloop services: their certificates chain to ours.
            http = httpx.AsyncClient(
                timeout=settings.patients_timeout_s, verify=internal_verify(settings)
            )
            runtime.state["http"] = http
            tokens = ServiceTokenSource(
                runtime.vault, SERVICE, settings.identity_token_url, clock=runtime.clock, http=http
            )
            runtime.state[DEMOGRAPHICS_KEY] = HttpDemographics(
                http, tokens, patients_url=settings.patients_url
            )
        else:
            runtime.state[DEMOGRAPHICS_KEY] = demographics

    async def on_shutdown(runtime: Runtime) -> None:
        http: httpx.AsyncClient | None = runtime.state.get("http")
        if http is not None:
            await http.aclose()

    return ServiceSpec(
        name=SERVICE,
        description=(
            "Care gaps: the measure library as versioned data, each patient's gaps kept "
            "current from clinical facts, demographics and visits, population evaluations "
            "as durable jobs, the population view for staff, and outreach campaigns whose "
            "steps run on durable timers."
        ),
        metadata=metadata,
        tables=platform,
        routers=[
            gaps_router,
            population_router,
            measures_router,
            evaluations_router,
            campaigns_router,
        ],
        consumers=[FACTS_CONSUMER, APPOINTMENTS_CONSUMER, LOCATIONS_CONSUMER],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        background=[evaluation_jobs, campaign_steps],
        verifies_tokens=True,
    )


def create_app(
    settings: CaregapsSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks: JwksSource | None = None,
    demographics: Demographics | None = None,
) -> FastAPI:
    """The care-gaps service with its runtime lifespan.

    `demographics` replaces the read from patients (service tests seed birth dates and
    sexes through it); `jwks` replaces identity's published keys (tests sign their own
    tokens).
    """
    settings = settings or CaregapsSettings()
    return create_service_app(
        build_spec(settings, demographics=demographics), settings, clock=clock, jwks=jwks
    )
