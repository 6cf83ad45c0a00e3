"""Vault policies are rendered from the platform's grants (`careloop_contracts.platform`)."""

from __future__ import annotations

import pytest

from careloop_contracts.platform import VAULT_GRANTS, VaultGrant
from careloop_kit.infra.openbao import policy_hcl

pytestmark = pytest.mark.unit


def test_each_platform_grant_is_in_its_services_policy_only() -> None:
    for service, grants in VAULT_GRANTS.items():
        others = [name for name in VAULT_GRANTS if name != service]
        for grant in grants:
            assert f'path "{grant.path}"' in policy_hcl(service)
            for other in others:
                assert f'path "{grant.path}"' not in policy_hcl(other)


def test_grants_handed_in_replace_the_platforms() -> None:
    grants = {"reports": (VaultGrant("transit/sign/reports-key", ("update",), "Sign reports."),)}
    policy = policy_hcl("reports", grants)
    assert '# Sign reports.\npath "transit/sign/reports-key" {\n  capabilities = ["update"]\n}' in (
        policy
    )
    assert 'path "secret/data/careloop/reports/*"' in policy
    assert "transit/sign/reports-key" not in policy_hcl("reports")


def test_a_service_without_grants_reaches_only_its_own_space_and_key() -> None:
    paths = [line for line in policy_hcl("reports").splitlines() if line.startswith("path ")]
    assert paths == [
        'path "secret/data/careloop/reports/*" {',
        'path "secret/metadata/careloop/reports/*" {',
        'path "transit/sign/careloop-service-reports" {',
        'path "transit/keys/careloop-service-reports" {',
    ]
