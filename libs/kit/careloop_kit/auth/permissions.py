"""THE PERMISSION TABLE: which role may do what, on which kind of PHI.

This is the single place access rights are written down. Every service enforces
it through `careloop_kit.auth.dependencies.require`, identity uses it to decide
which roles need MFA, and `docs/permissions.md` is generated from it
(`python -m careloop_kit.auth.permissions_doc`; `--check` fails when the file is stale).

Deny by default: a role, permission or PHI category not listed here grants nothing.
Object-level limits (own tenant, locations in scope, a patient's own record)
are applied on top by the principal's `can_access_*` checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# PHI categories, from least to most sensitive.
DEMOGRAPHICS: Final = "demographics"
CONTACT: Final = "contact"
PREFERENCES: Final = "preferences"
CLINICAL: Final = "clinical"
PHI_CATEGORIES: Final[tuple[str, ...]] = (DEMOGRAPHICS, CONTACT, PREFERENCES, CLINICAL)

PERMISSIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "patients:read": "Read one patient record.",
        "patients:search": "Search patients by name, birth date, phone or email.",
        "patients:create": "Register a new patient.",
        "patients:update": "Change a patient record.",
        "patients:merge": "Merge two records of the same person.",
        "audit:read": "Read the audit trail.",
        "audit:verify": "Verify the audit hash chain.",
    }
)

ROLE_DESCRIPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "org_admin": "Runs the organization: users, locations, everything incl. merges.",
        "location_manager": "Runs the locations in scope; no clinical data.",
        "provider": "Treats patients of the locations in scope.",
        "care_coordinator": "Coordinates care for patients of the locations in scope.",
        "front_desk": "Registers and updates patients; no clinical data.",
        "billing": "Identifies patients for billing: demographics and contact only.",
        "auditor": "Reads and verifies the audit trail; no patient PHI.",
        "patient": "A portal account: its own record only.",
    }
)

_ALL = frozenset(PHI_CATEGORIES)
_NON_CLINICAL = frozenset({DEMOGRAPHICS, CONTACT, PREFERENCES})
_IDENTIFY = frozenset({DEMOGRAPHICS, CONTACT})
_NONE: frozenset[str] = frozenset()


def _grants(categories: frozenset[str], *permissions: str) -> dict[str, frozenset[str]]:
    return dict.fromkeys(permissions, categories)


# role -> permission -> PHI categories the role may see through that permission.
_TABLE: dict[str, dict[str, frozenset[str]]] = {
    "org_admin": {
        **_grants(
            _ALL,
            "patients:read",
            "patients:search",
            "patients:create",
            "patients:update",
            "patients:merge",
        ),
        **_grants(_NONE, "audit:read", "audit:verify"),
    },
    "location_manager": _grants(
        _NON_CLINICAL, "patients:read", "patients:search", "patients:create", "patients:update"
    ),
    "provider": _grants(_ALL, "patients:read", "patients:search", "patients:update"),
    "care_coordinator": _grants(_ALL, "patients:read", "patients:search", "patients:update"),
    "front_desk": _grants(
        _NON_CLINICAL, "patients:read", "patients:search", "patients:create", "patients:update"
    ),
    "billing": _grants(_IDENTIFY, "patients:read", "patients:search"),
    "auditor": _grants(_NONE, "audit:read", "audit:verify"),
    "patient": _grants(_ALL, "patients:read"),
}

PERMISSION_TABLE: Final[Mapping[str, Mapping[str, frozenset[str]]]] = MappingProxyType(
    {role: MappingProxyType(grants) for role, grants in _TABLE.items()}
)
ROLES: Final[tuple[str, ...]] = tuple(PERMISSION_TABLE)

# Roles limited to one record: the principal's own patient id, whatever the location.
OWN_RECORD_ROLES: Final = frozenset({"patient"})


def _validate() -> None:
    """Refuse to import a table that names unknown permissions or categories."""
    if set(ROLE_DESCRIPTIONS) != set(PERMISSION_TABLE):
        raise ValueError("permission table: roles and role descriptions differ")
    for role, grants in PERMISSION_TABLE.items():
        for permission, categories in grants.items():
            if permission not in PERMISSIONS:
                raise ValueError(f"permission table: {role} has unknown {permission}")
            if not categories <= _ALL:
                raise ValueError(f"permission table: {role} has an unknown PHI category")


_validate()


def allowed(role: str, permission: str) -> bool:
    """Whether `role` holds `permission` (unknown roles and permissions: no)."""
    return permission in PERMISSION_TABLE.get(role, {})


def roles_with(permission: str) -> frozenset[str]:
    """Every role holding `permission`."""
    return frozenset(role for role in ROLES if allowed(role, permission))


def phi_categories(role: str, permission: str) -> frozenset[str]:
    """PHI categories `role` may see through `permission` (empty when not allowed)."""
    return PERMISSION_TABLE.get(role, {}).get(permission, _NONE)


def any_allowed(roles: tuple[str, ...] | list[str] | frozenset[str], permission: str) -> bool:
    """Whether any of `roles` holds `permission`."""
    return any(allowed(role, permission) for role in roles)


def categories_for(
    roles: tuple[str, ...] | list[str] | frozenset[str], permission: str
) -> frozenset[str]:
    """Union of the PHI categories `roles` may see through `permission`."""
    result: frozenset[str] = _NONE
    for role in roles:
        result |= phi_categories(role, permission)
    return result


def requires_mfa(role: str) -> bool:
    """Staff roles that can see clinical data must sign in with MFA."""
    if role in OWN_RECORD_ROLES:
        return False
    return any(CLINICAL in categories for categories in PERMISSION_TABLE.get(role, {}).values())


HEADER = """# Permissions

Generated from `careloop_kit.auth.permissions` by `python -m careloop_kit.auth.permissions_doc`;
do not edit by hand. This table is the only place access rights are defined: every
service enforces it with `require(permission)` from `careloop_kit.auth`.

Deny by default: anything not listed is refused (403). On top of the table every
service checks, per object:

- **tenant**: the token's `org` must own the resource; another organization's
  records are not found (404) or refused (403);
- **location scope**: staff reach only patients of locations in their token's
  `loc` claim (`*` means every location of the organization);
- **own record**: the `patient` role reaches only the record in its token's `pat`
  claim, whatever the location.

Partner clients hold no roles: their token's `scope` lists the permissions they
were granted (only with a current BAA, enforced by identity).
"""


def _cell(categories: frozenset[str] | None) -> str:
    if categories is None:
        return "—"
    if not categories:
        return "yes (no PHI)"
    return ", ".join(category for category in PHI_CATEGORIES if category in categories)


def render_markdown() -> str:
    """The Markdown of `docs/permissions.md`."""
    parts = [HEADER, "\n## Roles\n\n", "| role | purpose | MFA required |\n|---|---|---|\n"]
    for role in ROLES:
        mfa = "yes" if requires_mfa(role) else "no"
        parts.append(f"| `{role}` | {ROLE_DESCRIPTIONS[role]} | {mfa} |\n")
    parts.append("\n## Permissions\n\n| permission | meaning | roles |\n|---|---|---|\n")
    for permission, meaning in PERMISSIONS.items():
        holders = ", ".join(f"`{role}`" for role in ROLES if allowed(role, permission)) or "—"
        parts.append(f"| `{permission}` | {meaning} | {holders} |\n")
    parts.append(
        "\n## PHI categories by role and permission\n\n"
        "Each cell lists the PHI categories the role may see through the permission; "
        "— means denied.\n\n"
    )
    parts.append("| role | " + " | ".join(f"`{p}`" for p in PERMISSIONS) + " |\n")
    parts.append("|---|" + "---|" * len(PERMISSIONS) + "\n")
    for role in ROLES:
        cells = [_cell(PERMISSION_TABLE[role].get(permission)) for permission in PERMISSIONS]
        parts.append(f"| `{role}` | " + " | ".join(cells) + " |\n")
    parts.append(
        "\nPHI categories: "
        + ", ".join(f"`{category}`" for category in PHI_CATEGORIES)
        + ". The `patient` role sees every category, of its own record only.\n"
    )
    return "".join(parts)
