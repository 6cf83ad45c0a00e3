"""After `transit/keys/careloop-identity-fields/rotate`: rewrap identity's data keys, and
move any ciphertext from before the kit's port (one fixed key) onto it.

Both steps are idempotent, so the command is safe to re-run; once it reports nothing
changed meanwhile, old transit versions can be retired with `min_decryption_version`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from careloop_contracts.platform import IDENTITY_FIELDS_KEY
from careloop_identity.settings import IdentitySettings
from careloop_identity.store.tables import field_key
from careloop_identity.usecases.common import ENCRYPTED_COLUMNS, field_cipher
from careloop_kit.fields import REWRAP_BATCH, RewrapReport, rotate_fields
from careloop_kit.vault import Vault


async def rewrap(
    settings: IdentitySettings,
    *,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    vault = Vault.from_settings(settings)
    secret = await vault.read_secret(settings.totp_key_secret_path)
    cipher = field_cipher(vault, base64.b64decode(secret["key"]))
    return await rotate_fields(
        settings.database_url.get_secret_value(),
        vault,
        field_key,
        IDENTITY_FIELDS_KEY,
        legacy=[(cipher, ENCRYPTED_COLUMNS)],
        batch_size=batch_size,
        on_batch=on_batch,
    )
