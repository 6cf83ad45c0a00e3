"""What the HTTP doubles of outside APIs (Twilio, Phaxio) share: both authenticate
with HTTP Basic, an account id and a secret, checked in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac


def basic_auth_matches(header: str, user: str, password: str) -> bool:
    """Whether an `Authorization` header is HTTP Basic for exactly `user` and `password`."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given_user, _, given_password = (
            base64.b64decode(encoded, validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given_user, user) and hmac.compare_digest(given_password, password)
