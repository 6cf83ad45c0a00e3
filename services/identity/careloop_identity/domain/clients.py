"""Partner API clients: their secrets, scopes, locations and business associate agreement.

A partner (an EHR, a billing house, an analytics vendor) calls Careloop with the OAuth 2.0
client-credentials grant. What it may be granted comes from the permission table
(`careloop_kit.auth.permissions.PARTNER_SCOPES`); a scope that reaches patient data
(`reaches_phi`) needs a business associate agreement (BAA, HIPAA §164.502(e)) that is
current: signed on or before today and expiring after today, both dates recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from careloop_kit.auth.permissions import PARTNER_SCOPES, partner_may_hold, reaches_phi

ALL_LOCATIONS = "*"
SECRET_BYTES = 32
"""256 bits of entropy: guessing is hopeless, so a wrong secret needs no lockout."""
MAX_SCOPE_PARAMETER = 1000


class InvalidClient(ValueError):
    """Scopes, locations or BAA dates of a client that cannot be accepted."""


class BaaRequired(InvalidClient):
    """A scope that reaches patient data was granted without a current BAA."""

    def __init__(self, phi_scopes: Sequence[str]) -> None:
        self.phi_scopes = tuple(phi_scopes)
        names = ", ".join(self.phi_scopes)
        super().__init__(
            f"{names} reach patient data: a partner may hold them only under a current "
            "business associate agreement. Record the signed BAA in the same request "
            "(baa_signed_on on or before today, baa_expires_on after today, UTC), "
            "or leave these scopes out."
        )


class ScopeRefused(ValueError):
    """The scopes a token request asks for cannot be issued (OAuth `invalid_scope`)."""


@dataclass(frozen=True)
class Baa:
    """The dates of a partner's business associate agreement, as recorded."""

    signed_on: date | None
    expires_on: date | None

    def current_on(self, today: date) -> bool:
        """Whether the agreement covers `today`: both dates recorded and
        signed_on <= today < expires_on. An agreement without an end date is not
        accepted as current, so every grant of PHI comes up for review."""
        if self.signed_on is None or self.expires_on is None:
            return False
        return self.signed_on <= today < self.expires_on


def utc_day(now: datetime) -> date:
    """The calendar day of `now` in UTC: BAA dates are compared in UTC everywhere."""
    return now.astimezone(UTC).date()


def new_secret() -> str:
    """A fresh client secret (URL-safe text); shown once, only its hash is stored."""
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a secret. A fast hash suffices: the secret is random, not a
    password, so there is nothing for a slow hash to protect against."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(presented: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(presented), stored_hash)


def session_id(client_id: str, secret_version: int) -> str:
    """The `sid` of a client's tokens: one per secret version, so rotating the secret
    or disabling the client revokes every token issued under the old one."""
    return f"{client_id}.{secret_version}"


def phi_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes among `scopes` that reach patient data, sorted."""
    return tuple(sorted(s for s in set(scopes) if reaches_phi(s)))


def normalize_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated scopes, each grantable to a partner; `InvalidClient` otherwise."""
    unique = tuple(sorted(set(scopes)))
    if not unique:
        raise InvalidClient("A client needs at least one scope.")
    refused = [s for s in unique if not partner_may_hold(s)]
    if refused:
        raise InvalidClient(
            f"Scopes {refused} cannot be granted to a partner; grantable: "
            f"{', '.join(PARTNER_SCOPES)}."
        )
    return unique


def normalize_locations(locations: Sequence[str] | str) -> tuple[str, ...]:
    """Sorted, de-duplicated location ids, or `("*",)` for every location."""
    if isinstance(locations, str):
        if locations != ALL_LOCATIONS:
            raise InvalidClient('locations is a list of location ids or "*" for all.')
        return (ALL_LOCATIONS,)
    scope = tuple(sorted(set(locations)))
    if not scope:
        raise InvalidClient('A client needs at least one location, or "*" for all.')
    if ALL_LOCATIONS in scope and len(scope) > 1:
        raise InvalidClient('"*" means every location; do not list others with it.')
    return scope


def check_baa_dates(baa: Baa) -> None:
    """Refuse dates that cannot describe an agreement."""
    if baa.expires_on is not None and baa.signed_on is None:
        raise InvalidClient("baa_expires_on needs baa_signed_on: record when the BAA was signed.")
    if baa.signed_on is not None and baa.expires_on is not None and baa.expires_on <= baa.signed_on:
        raise InvalidClient("baa_expires_on must be after baa_signed_on.")


def check_grant(scopes: Iterable[str], baa: Baa, today: date) -> None:
    """`BaaRequired` when `scopes` include one that reaches PHI and the BAA is not
    current on `today`."""
    needing = phi_scopes(scopes)
    if needing and not baa.current_on(today):
        raise BaaRequired(needing)


def parse_scope_parameter(value: str | None) -> frozenset[str] | None:
    """The scopes of an OAuth `scope` parameter (space separated, RFC 6749 §3.3), or
    None when it is absent or blank (the client then gets everything it may hold)."""
    if value is None or not value.strip():
        return None
    if len(value) > MAX_SCOPE_PARAMETER:
        raise ScopeRefused("The scope parameter is too long.")
    return frozenset(value.split())


def effective_scopes(
    requested: frozenset[str] | None,
    granted: Iterable[str],
    baa: Baa,
    today: date,
) -> tuple[str, ...]:
    """The scopes to put in a token issued on `today`.

    Requested scopes must be a subset of the granted ones. A PHI scope is left out of
    a default request when the BAA is no longer current (it expired after the grant),
    but asking for one explicitly is refused, so a partner learns why its data access
    stopped. `ScopeRefused` when nothing would remain.
    """
    held = frozenset(granted)
    current = baa.current_on(today)
    if requested is not None:
        unknown = sorted(requested - held)
        if unknown:
            raise ScopeRefused(f"Scopes {unknown} are not granted to this client.")
        needing = phi_scopes(requested)
        if needing and not current:
            raise ScopeRefused(
                f"Scopes {list(needing)} reach patient data and this client's business "
                "associate agreement is not current; ask the organization to renew it."
            )
        chosen = requested
    else:
        chosen = held if current else frozenset(s for s in held if not reaches_phi(s))
    if not chosen:
        raise ScopeRefused(
            "No scope can be issued: this client's scopes all reach patient data and its "
            "business associate agreement is not current; ask the organization to renew it."
        )
    return tuple(sorted(chosen))
