"""Settings of the patients service (environment prefix `CARELOOP_`)."""

from __future__ import annotations

from pydantic import Field

from careloop_kit.settings import KitSettings


class PatientsSettings(KitSettings):
    http_port: int = Field(8101, description="Port of the patients API.")
    phi_transit_key: str = Field(
        "careloop-phi", description="Vault transit key that wraps patient data keys."
    )
    blind_index_secret_path: str = Field(
        "careloop/patients/blind-index",
        description="KV v2 path of the blind-index master key (field `key`, base64).",
    )
    data_key_cache_ttl_s: int = Field(
        300, description="Seconds an unwrapped data key stays in memory."
    )
    data_key_cache_size: int = Field(
        10_000, description="Unwrapped data keys kept in memory at most."
    )
