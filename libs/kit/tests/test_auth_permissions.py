from __future__ import annotations

import pytest

from careloop_kit.auth import (
    PERMISSION_TABLE,
    PERMISSIONS,
    PHI_CATEGORIES,
    ROLES,
    allowed,
    phi_categories,
    requires_mfa,
    roles_with,
)
from careloop_kit.auth.permissions import render_markdown
from careloop_kit.auth.permissions_doc import main, target

pytestmark = pytest.mark.unit

PATIENT_PERMISSIONS = [p for p in PERMISSIONS if p.startswith("patients:")]


def test_every_role_of_the_domain_is_in_the_table() -> None:
    assert set(ROLES) == {
        "org_admin",
        "location_manager",
        "provider",
        "care_coordinator",
        "front_desk",
        "billing",
        "auditor",
        "patient",
    }


def test_deny_by_default() -> None:
    assert not allowed("nobody", "patients:read")
    assert not allowed("org_admin", "patients:delete")
    assert phi_categories("nobody", "patients:read") == frozenset()
    assert roles_with("patients:delete") == frozenset()


def test_org_admin_may_do_everything() -> None:
    for permission in PERMISSIONS:
        assert allowed("org_admin", permission)
    assert phi_categories("org_admin", "patients:read") == set(PHI_CATEGORIES)


def test_only_org_admin_merges() -> None:
    assert roles_with("patients:merge") == {"org_admin"}


def test_billing_sees_identity_only() -> None:
    assert allowed("billing", "patients:read")
    assert allowed("billing", "patients:search")
    assert not allowed("billing", "patients:update")
    assert not allowed("billing", "patients:merge")
    assert phi_categories("billing", "patients:read") == {"demographics", "contact"}


def test_front_desk_registers_without_clinical() -> None:
    for permission in ["patients:create", "patients:read", "patients:update", "patients:search"]:
        assert phi_categories("front_desk", permission) == {
            "demographics",
            "contact",
            "preferences",
        }
    assert not allowed("front_desk", "patients:merge")


def test_auditor_reads_audit_and_no_phi() -> None:
    assert allowed("auditor", "audit:read")
    assert allowed("auditor", "audit:verify")
    for permission in PATIENT_PERMISSIONS:
        assert not allowed("auditor", permission)


def test_patient_only_reads_and_self_schedules() -> None:
    assert [p for p in PERMISSIONS if allowed("patient", p)] == [
        "patients:read",
        "scheduling:read",
        "scheduling:book",
        # Its own portal inbox (the object checks keep it to its own record).
        "messages:read",
        # Its own referrals, the same way.
        "referrals:read",
        # Its own care gaps, shown as reminders.
        "caregaps:read",
    ]


@pytest.mark.parametrize("role", ["provider", "care_coordinator"])
def test_clinicians_read_search_update_clinical(role: str) -> None:
    for permission in ["patients:read", "patients:search", "patients:update"]:
        assert "clinical" in phi_categories(role, permission)
    assert not allowed(role, "patients:merge")


def test_audit_is_only_for_admin_and_auditor() -> None:
    assert roles_with("audit:read") == {"org_admin", "auditor"}
    assert roles_with("audit:verify") == {"org_admin", "auditor"}


def test_mfa_for_staff_reading_clinical_data() -> None:
    assert {role for role in ROLES if requires_mfa(role)} == {
        "org_admin",
        "provider",
        "care_coordinator",
    }


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        PERMISSION_TABLE["billing"]["patients:merge"] = frozenset()  # type: ignore[index]


def test_permissions_doc_is_fresh() -> None:
    """docs/permissions.md is generated from the table; regenerate with
    `python -m careloop_kit.auth.permissions_doc`."""
    assert target().read_text() == render_markdown()
    assert main(["--check"]) == 0


def test_permissions_doc_lists_every_role_and_permission() -> None:
    text = render_markdown()
    for name in [*ROLES, *PERMISSIONS]:
        assert f"`{name}`" in text


def test_partner_scopes_that_reach_phi_need_a_baa() -> None:
    from careloop_kit.auth.permissions import PARTNER_SCOPES, partner_may_hold, reaches_phi

    assert reaches_phi("patients:read")
    assert reaches_phi("audit:read")
    assert not reaches_phi("locations:read")
    assert partner_may_hold("locations:read")
    assert not partner_may_hold("patients:merge")
    assert not partner_may_hold("users:manage")
    for scope, categories in PARTNER_SCOPES.items():
        assert "clinical" not in categories
        assert bool(categories) <= reaches_phi(scope)


def test_service_grants_are_named_by_subject() -> None:
    from careloop_kit.auth.permissions import service_categories, service_of, service_subject

    assert service_of(service_subject("messaging")) == "messaging"
    assert service_of("messaging") is None
    assert service_of("service:") is None
    assert service_categories("messaging", "patients:read") == {"contact", "preferences"}
    assert service_categories("messaging", "patients:update") is None
    assert service_categories(None, "patients:read") is None
