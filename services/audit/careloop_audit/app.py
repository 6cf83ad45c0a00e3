"""Composition root of the audit service."""

from __future__ import annotations

from careloop_audit.api.routes import router
from careloop_audit.handlers.checkpoints import checkpoint_job
from careloop_audit.handlers.trail import TRAIL_CONSUMER
from careloop_audit.settings import AuditSettings
from careloop_audit.store.checkpoints import CheckpointStore
from careloop_audit.store.tables import metadata, platform
from careloop_audit.usecases.checkpoints import CheckpointSigner
from careloop_kit.service import Runtime, ServiceAppFactory, ServiceSpec

SERVICE = "audit"


def build_spec(settings: AuditSettings) -> ServiceSpec:
    async def on_startup(runtime: Runtime) -> None:
        store = CheckpointStore(
            settings,
            runtime.vault,
            key_name=settings.checkpoint_signing_key,
            read_timeout_s=settings.checkpoint_read_timeout_s,
        )
        await store.ensure_topic()
        runtime.state["checkpoints"] = store
        runtime.state["signer"] = CheckpointSigner(
            store,
            every_records=settings.checkpoint_every_records,
            interval_s=settings.checkpoint_interval_s,
        )

    return ServiceSpec(
        name=SERVICE,
        description=(
            "The tamper-evident, hash-chained log of every PHI access and change: "
            "accounting of disclosures, FHIR AuditEvent export, integrity verification."
        ),
        metadata=metadata,
        tables=platform,
        routers=[router],
        consumers=[TRAIL_CONSUMER],
        on_startup=on_startup,
        verifies_tokens=True,
        background=[checkpoint_job],
    )


create_app = ServiceAppFactory(build_spec, AuditSettings)
