from __future__ import annotations

from datetime import date

import pytest

from careloop_patients.domain.patient import (
    Channel,
    ContactPreferences,
    HumanName,
    InvalidPatient,
    PatientDetails,
    apply_changes,
    categories_of,
    merge_details,
    name_birth_key,
    normalize_email,
    normalize_name,
    normalize_phone,
    search_keys,
)

pytestmark = pytest.mark.unit


def details(**overrides: object) -> PatientDetails:
    base = PatientDetails(
        name=HumanName("García-López", ("Ána",)),
        birth_date=date(1975, 3, 9),
        phones=("555-201-3344",),
        emails=("Ana@Example.test",),
    )
    return apply_changes(base, overrides)[0] if overrides else base


def test_names_normalize_case_accents_hyphens_and_spacing() -> None:
    assert normalize_name("  García-López ") == normalize_name("garcia lopez")
    assert normalize_name("ÁNA") == "ana"


def test_phones_normalize_to_one_form() -> None:
    assert normalize_phone("(555) 201-3344") == normalize_phone("+1 555 201 3344") == "+15552013344"
    assert normalize_phone("+44 20 7946 0958") == "+442079460958"


def test_emails_normalize_case() -> None:
    assert normalize_email(" Ana@Example.TEST ") == "ana@example.test"


def test_search_keys_cover_name_birth_phone_email() -> None:
    kinds = sorted(k.kind for k in search_keys(details()))
    assert kinds == ["email", "name_birth", "phone"]
    assert name_birth_key("GARCIA LOPEZ", "ana", date(1975, 3, 9)) in search_keys(details())


def test_changes_report_only_fields_that_changed() -> None:
    _, changed = apply_changes(
        details(), {"phones": ("555-201-3344",), "emails": ("b@example.org",)}
    )
    assert changed == ["emails"]
    assert categories_of(["emails", "name"]) == ["contact", "demographics"]


def test_future_birth_date_is_refused() -> None:
    with pytest.raises(InvalidPatient, match="future"):
        apply_changes(details(), {"birth_date": date(2999, 1, 1)})


def test_preferred_channel_must_be_allowed() -> None:
    with pytest.raises(InvalidPatient, match="preferred channel"):
        apply_changes(
            details(),
            {"preferences": ContactPreferences((Channel.EMAIL,), preferred_channel=Channel.SMS)},
        )


def test_unknown_field_is_refused() -> None:
    with pytest.raises(InvalidPatient, match="unknown"):
        apply_changes(details(), {"ssn": "x"})


def test_merge_keeps_survivor_and_gains_contacts() -> None:
    survivor = details()
    duplicate = apply_changes(
        details(), {"phones": ("555-000-1111",), "emails": ("x@example.org",)}
    )[0]
    merged = merge_details(survivor, duplicate)
    assert merged.name == survivor.name
    assert merged.phones == ("555-201-3344", "555-000-1111")
    assert merged.emails == ("Ana@Example.test", "x@example.org")
