"""After `transit/keys/careloop-referrals-fields/rotate`: rewrap referrals' data keys
under the key's latest version, without any plaintext leaving Vault.

Idempotent, so the command is safe to re-run; once it reports nothing changed
meanwhile, old transit versions can be retired with `min_decryption_version`. Referrals
were sealed through the kit's port from the start, so there is nothing from before it to
move.
"""

from __future__ import annotations

from collections.abc import Callable

from careloop_kit.fields import REWRAP_BATCH, RewrapReport, rotate_service_fields
from careloop_referrals.settings import ReferralsSettings
from careloop_referrals.store.tables import field_key


async def rewrap(
    settings: ReferralsSettings,
    *,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    return await rotate_service_fields(
        settings, field_key, settings.fields_transit_key, batch_size=batch_size, on_batch=on_batch
    )
