"""Password policy (hashing itself is argon2id, in the composition root's hasher)."""

from __future__ import annotations

MIN_LENGTH = 12
MAX_LENGTH = 256


class WeakPassword(ValueError):
    """The password does not meet the policy; the message says which rule."""


def _classes(password: str) -> int:
    kinds = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    )
    return sum(kinds)


def check_password(password: str, *, email: str) -> None:
    """Raise `WeakPassword` unless the password is long enough, mixes character
    classes, and is not the account's email."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"A password needs at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"A password has at most {MAX_LENGTH} characters.")
    if _classes(password) < 2:
        raise WeakPassword(
            "A password mixes at least two of: lower case, upper case, digits, symbols."
        )
    if password.strip().lower() == email.strip().lower():
        raise WeakPassword("A password must not be the account's email address.")
