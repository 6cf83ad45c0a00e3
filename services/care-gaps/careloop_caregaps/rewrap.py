"""After `transit/keys/careloop-caregaps-fields/rotate`: rewrap care-gaps' data keys under
the key's latest version, without any plaintext leaving Vault.

Idempotent, so the command is safe to re-run; once it reports nothing changed
meanwhile, old transit versions can be retired with `min_decryption_version`.
"""

from __future__ import annotations

from collections.abc import Callable

from careloop_caregaps.settings import CaregapsSettings
from careloop_caregaps.store.tables import field_key
from careloop_kit.fields import REWRAP_BATCH, RewrapReport, rotate_service_fields


async def rewrap(
    settings: CaregapsSettings,
    *,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    return await rotate_service_fields(
        settings, field_key, settings.fields_transit_key, batch_size=batch_size, on_batch=on_batch
    )
