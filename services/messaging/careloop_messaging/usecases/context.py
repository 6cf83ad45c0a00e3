"""What the use cases find in the runtime: the service's settings and the keys and
helpers `app.py` puts in `runtime.state` at start-up, each under one name."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import cast

from careloop_kit.service import Runtime
from careloop_kit.vault import Vault
from careloop_messaging.patients_client import BatchContacts, ContactSource
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import InboxCipher, RecipientCipher, SecureLinks

CIPHER_KEY = "cipher"
INBOX_CIPHER_KEY = "inbox_cipher"
LINKS_KEY = "links"
CONTACTS_KEY = "contacts"
DELIVERY_KEY = "delivery"


async def vault_keys(vault: Vault, path: str) -> tuple[bytes, list[bytes]]:
    """A 32-byte key from messaging's KV space (provisioned by `bootstrap_vault`), and
    during a rotation the key it replaced (`previous_key`), still accepted: start-up fails
    without a key rather than working with one that dies with the process (addresses
    nobody could find again, links that stop working on restart)."""
    secret = await vault.read_secret(path)
    keys = []
    for field in ("key", "previous_key"):
        if field == "previous_key" and not secret.get(field):
            break
        try:
            key = base64.b64decode(secret[field])
        except (KeyError, ValueError) as exc:
            raise RuntimeError(f"{path} must hold field `{field}` (base64, 32 bytes)") from exc
        if len(key) < 32:
            raise RuntimeError(f"{path} field `{field}` must hold a 32-byte key")
        keys.append(key)
    return keys[0], keys[1:]


def settings_of(runtime: Runtime) -> MessagingSettings:
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)
    return settings


# `cast`, not a check: a test's double may stand in for what `app.py` puts there.
def recipient_cipher(runtime: Runtime) -> RecipientCipher:
    return cast(RecipientCipher, runtime.state[CIPHER_KEY])


def inbox_cipher(runtime: Runtime) -> InboxCipher:
    return cast(InboxCipher, runtime.state[INBOX_CIPHER_KEY])


def secure_links(runtime: Runtime) -> SecureLinks:
    return cast(SecureLinks, runtime.state[LINKS_KEY])


def contact_source(runtime: Runtime) -> ContactSource:
    return cast(ContactSource, runtime.state[CONTACTS_KEY])


def batch_contacts_for(runtime: Runtime) -> Callable[[], BatchContacts]:
    """The contacts cache one consumer's batches share, built at its first batch (the
    contact source is set up with the runtime, after the consumers are declared)."""
    batch: BatchContacts | None = None

    def contacts() -> BatchContacts:
        nonlocal batch
        if batch is None:
            concurrency = settings_of(runtime).patients_concurrency
            batch = BatchContacts(contact_source(runtime), concurrency=concurrency)
        return batch

    return contacts
