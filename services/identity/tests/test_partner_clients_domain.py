"""Partner clients, the pure rules: BAA currency, grantable scopes, scopes of a token."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from careloop_identity.domain.clients import (
    Baa,
    BaaRequired,
    InvalidClient,
    ScopeRefused,
    check_baa_dates,
    check_grant,
    effective_scopes,
    hash_secret,
    new_secret,
    normalize_locations,
    normalize_scopes,
    parse_scope_parameter,
    secret_matches,
    session_id,
    utc_day,
)

pytestmark = pytest.mark.unit

TODAY = date(2031, 6, 15)
CURRENT = Baa(TODAY - timedelta(days=30), TODAY + timedelta(days=335))
LAPSED = Baa(TODAY - timedelta(days=400), TODAY - timedelta(days=35))
NONE = Baa(None, None)


@pytest.mark.parametrize(
    ("baa", "current"),
    [
        (CURRENT, True),
        (Baa(TODAY, TODAY + timedelta(days=1)), True),  # signed today counts
        (Baa(TODAY - timedelta(days=1), TODAY), False),  # expires today: over
        (Baa(TODAY + timedelta(days=1), TODAY + timedelta(days=9)), False),  # not yet
        (LAPSED, False),
        (NONE, False),
        (Baa(TODAY - timedelta(days=1), None), False),  # no end date: not accepted
    ],
)
def test_a_baa_is_current_from_its_signing_day_until_the_day_before_it_expires(
    baa: Baa, current: bool
) -> None:
    assert baa.current_on(TODAY) is current


def test_the_day_is_taken_in_utc() -> None:
    late_in_chicago = datetime(2031, 6, 15, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert utc_day(late_in_chicago) == date(2031, 6, 16)
    assert utc_day(datetime(2031, 6, 15, 0, 0, tzinfo=UTC)) == date(2031, 6, 15)


def test_secrets_are_random_and_only_their_hash_is_compared() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert len(first) >= 43  # 32 random bytes, base64url
    stored = hash_secret(first)
    assert stored == hashlib.sha256(first.encode()).hexdigest()
    assert first not in stored
    assert secret_matches(first, stored)
    assert not secret_matches(second, stored)
    assert not secret_matches("", stored)


def test_a_tokens_session_names_the_secret_version() -> None:
    assert session_id("c-1", 1) == "c-1.1"
    assert session_id("c-1", 2) != session_id("c-1", 1)


def test_only_partner_scopes_are_grantable() -> None:
    assert normalize_scopes(["patients:read", "locations:read", "patients:read"]) == (
        "locations:read",
        "patients:read",
    )
    for refused in (["patients:merge"], ["users:manage"], ["clients:manage"], ["nope"], []):
        with pytest.raises(InvalidClient):
            normalize_scopes(refused)


def test_locations_are_a_list_or_every_location() -> None:
    assert normalize_locations("*") == ("*",)
    assert normalize_locations(["*"]) == ("*",)
    assert normalize_locations(["b", "a", "b"]) == ("a", "b")
    for refused in ("all", [], ["*", "a"]):
        with pytest.raises(InvalidClient):
            normalize_locations(refused)


def test_baa_dates_must_describe_an_agreement() -> None:
    check_baa_dates(CURRENT)
    check_baa_dates(NONE)
    check_baa_dates(Baa(TODAY, None))
    with pytest.raises(InvalidClient, match="needs baa_signed_on"):
        check_baa_dates(Baa(None, TODAY))
    with pytest.raises(InvalidClient, match="after"):
        check_baa_dates(Baa(TODAY, TODAY))


def test_a_phi_scope_is_granted_only_under_a_current_baa() -> None:
    check_grant(["locations:read"], NONE, TODAY)
    check_grant(["patients:read", "locations:read"], CURRENT, TODAY)
    with pytest.raises(BaaRequired) as refused:
        check_grant(["patients:search", "patients:read", "locations:read"], LAPSED, TODAY)
    assert refused.value.phi_scopes == ("patients:read", "patients:search")
    assert "business associate agreement" in str(refused.value)


def test_the_scope_parameter_is_space_separated_and_optional() -> None:
    assert parse_scope_parameter(None) is None
    assert parse_scope_parameter("  ") is None
    assert parse_scope_parameter("a:b  c:d") == frozenset({"a:b", "c:d"})
    with pytest.raises(ScopeRefused):
        parse_scope_parameter("x" * 2000)


GRANTED = ("locations:read", "patients:read")


def test_a_token_gets_every_granted_scope_by_default_or_the_requested_subset() -> None:
    assert effective_scopes(None, GRANTED, CURRENT, TODAY) == GRANTED
    assert effective_scopes(frozenset({"patients:read"}), GRANTED, CURRENT, TODAY) == (
        "patients:read",
    )


def test_requesting_a_scope_not_granted_is_refused() -> None:
    with pytest.raises(ScopeRefused, match="not granted"):
        effective_scopes(frozenset({"patients:search"}), GRANTED, CURRENT, TODAY)


def test_after_the_baa_lapses_phi_scopes_leave_the_token() -> None:
    assert effective_scopes(None, GRANTED, LAPSED, TODAY) == ("locations:read",)
    with pytest.raises(ScopeRefused, match="not current"):
        effective_scopes(frozenset({"patients:read"}), GRANTED, LAPSED, TODAY)
    with pytest.raises(ScopeRefused, match="No scope"):
        effective_scopes(None, ("patients:read",), LAPSED, TODAY)
