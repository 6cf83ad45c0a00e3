"""Settings of the audit service (environment prefix `CARELOOP_`)."""

from __future__ import annotations

from pydantic import Field

from careloop_kit.settings import KitSettings


class AuditSettings(KitSettings):
    http_port: int = Field(8102, description="Port of the audit API.")
    checkpoint_interval_s: float = Field(
        10.0,
        gt=0,
        description="Sign a checkpoint at least this often (seconds) while new records arrive.",
    )
    checkpoint_every_records: int = Field(
        1000, ge=1, description="Sign a checkpoint as soon as this many new records exist."
    )
    checkpoint_signing_key: str = Field(
        "careloop-audit-checkpoint",
        description="Vault transit key (ed25519) that signs checkpoints.",
    )
    checkpoint_read_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait when reading the checkpoint topic back."
    )
