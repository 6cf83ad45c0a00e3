"""Composition root of the patients service."""

from __future__ import annotations

from datetime import timedelta

from careloop_kit.crypto import BlindIndexer, KeyRing
from careloop_kit.service import Runtime, ServiceAppFactory, ServiceSpec
from careloop_patients.api.facts import router as facts_router
from careloop_patients.api.routes import router
from careloop_patients.handlers.appointments import CARE_RELATIONSHIPS_CONSUMER
from careloop_patients.handlers.locations import LOCATIONS_CONSUMER
from careloop_patients.handlers.referrals import REFERRAL_RELATIONSHIPS_CONSUMER
from careloop_patients.settings import PatientsSettings
from careloop_patients.store.tables import metadata, platform

SERVICE = "patients"


def build_spec(settings: PatientsSettings) -> ServiceSpec:
    async def on_startup(runtime: Runtime) -> None:
        secret = await runtime.vault.read_secret(settings.blind_index_secret_path)
        runtime.state["indexer"] = BlindIndexer.from_secret(secret)
        runtime.state["keys"] = KeyRing(
            runtime.vault,
            settings.phi_transit_key,
            ttl=timedelta(seconds=settings.data_key_cache_ttl_s),
            max_entries=settings.data_key_cache_size,
            clock=runtime.clock,
        )

    return ServiceSpec(
        name=SERVICE,
        description="The unified patient record across locations; PHI encrypted at rest.",
        metadata=metadata,
        tables=platform,
        routers=[router, facts_router],
        consumers=[
            CARE_RELATIONSHIPS_CONSUMER,
            REFERRAL_RELATIONSHIPS_CONSUMER,
            LOCATIONS_CONSUMER,
        ],
        on_startup=on_startup,
        verifies_tokens=True,
    )


create_app = ServiceAppFactory(build_spec, PatientsSettings)
