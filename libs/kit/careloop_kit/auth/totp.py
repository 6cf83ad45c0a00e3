"""RFC 6238 time-based one-time passwords (HMAC-SHA1, 30-second steps): identity
checks them at sign-in, and tools that sign a demo admin in compute them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from datetime import datetime
from urllib.parse import quote, urlencode

STEP_S = 30
DIGITS = 6
WINDOW = 1
"""Steps accepted either side of now, for clock drift between phone and server."""
SECRET_BYTES = 20


def new_secret() -> bytes:
    """A fresh 160-bit shared secret (the RFC 4226 recommended length)."""
    return secrets.token_bytes(SECRET_BYTES)


def to_base32(secret: bytes) -> str:
    """The secret as authenticator apps expect it: base32 without padding."""
    return base64.b32encode(secret).decode().rstrip("=")


def from_base32(text: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    return base64.b32decode(padded)


def step_at(moment: datetime, step_s: int = STEP_S) -> int:
    return int(moment.timestamp()) // step_s


def hotp(secret: bytes, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226 HOTP value for `counter`, zero-padded to `digits`."""
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    binary = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def totp(secret: bytes, moment: datetime, digits: int = DIGITS, step_s: int = STEP_S) -> str:
    """RFC 6238 TOTP value at `moment`."""
    return hotp(secret, step_at(moment, step_s), digits)


def verify(
    secret: bytes,
    code: str,
    moment: datetime,
    *,
    last_used_step: int | None = None,
    window: int = WINDOW,
) -> int | None:
    """The time step `code` matches within ±`window` steps, or None.

    A step at or before `last_used_step` is refused, so a code works once.
    """
    if len(code) != DIGITS or not code.isdigit():
        return None
    now_step = step_at(moment)
    for step in range(now_step - window, now_step + window + 1):
        if last_used_step is not None and step <= last_used_step:
            continue
        if hmac.compare_digest(hotp(secret, step), code):
            return step
    return None


def provisioning_uri(secret: bytes, *, account: str, issuer: str) -> str:
    """The `otpauth://` URI an authenticator app scans as a QR code."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": to_base32(secret),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_S,
        }
    )
    return f"otpauth://totp/{label}?{query}"
