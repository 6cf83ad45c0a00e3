"""What the use cases find in the runtime: the service's settings and the keys and
helpers `app.py` puts in `runtime.state` at start-up, each under one name."""

from __future__ import annotations

from careloop_kit.service import Runtime
from careloop_messaging.patients_client import ContactSource
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import InboxCipher, RecipientCipher, SecureLinks

CIPHER_KEY = "cipher"
INBOX_CIPHER_KEY = "inbox_cipher"
LINKS_KEY = "links"
CONTACTS_KEY = "contacts"
DELIVERY_KEY = "delivery"


def settings_of(runtime: Runtime) -> MessagingSettings:
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)
    return settings


def recipient_cipher(runtime: Runtime) -> RecipientCipher:
    cipher: RecipientCipher = runtime.state[CIPHER_KEY]
    return cipher


def inbox_cipher(runtime: Runtime) -> InboxCipher:
    cipher: InboxCipher = runtime.state[INBOX_CIPHER_KEY]
    return cipher


def secure_links(runtime: Runtime) -> SecureLinks:
    links: SecureLinks = runtime.state[LINKS_KEY]
    return links


def contact_source(runtime: Runtime) -> ContactSource:
    source: ContactSource = runtime.state[CONTACTS_KEY]
    return source
