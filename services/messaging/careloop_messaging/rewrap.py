"""After `transit/keys/careloop-messaging-fields/rotate`: rewrap messaging's data keys, and
move any address or inbox item sealed before the kit's port (under keys derived from the
recipient secret) onto it.

Every step is idempotent, so the command is safe to re-run; once it reports nothing
changed meanwhile, old transit versions can be retired with `min_decryption_version`.
"""

from __future__ import annotations

from collections.abc import Callable

from careloop_contracts.platform import MESSAGING_FIELDS_KEY
from careloop_kit.fields import REWRAP_BATCH, RewrapReport, rotate_fields
from careloop_kit.vault import Vault
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import INBOX_COLUMNS, RECIPIENT_COLUMNS, field_ciphers
from careloop_messaging.store.tables import field_key
from careloop_messaging.usecases.context import vault_keys


async def rewrap(
    settings: MessagingSettings,
    *,
    batch_size: int = REWRAP_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    vault = Vault.from_settings(settings)
    recipient_key, _ = await vault_keys(vault, settings.recipient_key_secret_path)
    recipients, inbox = field_ciphers(vault, recipient_key)
    # Each use opens its old ciphertexts with its own legacy key, hence two passes.
    return await rotate_fields(
        settings.database_url.get_secret_value(),
        vault,
        field_key,
        MESSAGING_FIELDS_KEY,
        legacy=[(recipients.fields, RECIPIENT_COLUMNS), (inbox.fields, INBOX_COLUMNS)],
        batch_size=batch_size,
        on_batch=on_batch,
    )
