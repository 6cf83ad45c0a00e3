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

from careloop_contracts.platform import SERVICE_GRANTS as PLATFORM_SERVICE_GRANTS

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
        "locations:read": "List the organization's locations (no PHI).",
        "locations:manage": "Add and change locations.",
        "users:read": "Read staff and portal accounts of the organization.",
        "users:manage": "Create accounts and change their roles and location scopes.",
        "clients:manage": "Register partner API clients, their scopes and BAA status.",
        "scheduling:read": (
            "Read providers, appointment types, open slots and appointments "
            "(no PHI beyond the patient id)."
        ),
        "scheduling:book": "Book, cancel, reschedule, confirm, check in and mark no-shows.",
        "scheduling:manage": "Manage providers, appointment types and availability.",
        "templates:read": "Read the organization's message templates and their versions (no PHI).",
        "templates:manage": "Change, revert and preview message templates (no PHI).",
        "messages:read": "Read the messages in a patient's portal inbox.",
        "referrals:read": (
            "Read referrals, their history, the provider directory and loop-closure "
            "figures (the reason for a referral is clinical)."
        ),
        "referrals:create": "Create inbound and outbound referrals.",
        "referrals:update": "Move referrals through their stages and link their appointments.",
        "referrals:manage": "Manage the provider directory (no PHI).",
        "tasks:read": (
            "Read the worklists of the locations in scope: tasks, their counts and "
            "comments (comments may be clinical)."
        ),
        "tasks:update": "Create, claim, assign, comment on, complete and cancel tasks.",
        "tasks:manage": "Manage the task rules and the queues' members (no PHI).",
        "caregaps:read": (
            "Read care gaps, their evidence and the population view (a gap names a "
            "measure, so it is clinical)."
        ),
        "caregaps:update": "Decline, exclude or reopen a care gap by hand, with a reason.",
        "caregaps:manage": "Run population evaluations and read the measure library (no PHI).",
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


# Scheduling grants carry no PHI categories: its responses hold no patient-record
# field, only the patient id. (The audit trail still files appointment access under
# `clinical`: who sees which provider, when and for what kind of visit is care data.)
_SCHEDULING_STAFF = ("scheduling:read", "scheduling:book")
_SCHEDULING_ALL = (*_SCHEDULING_STAFF, "scheduling:manage")

# Referrals: the reason for a referral and each step's reason are clinical; the rest
# (stage, clocks, providers) is what coordinating the loop needs.
_REFERRALS_CARE = ("referrals:read", "referrals:create", "referrals:update")

# Templates hold no PHI (the save-time check keeps patient fields out of them); who
# may change what patients are told is still an admin right, per location for managers.
_TEMPLATES = ("templates:read", "templates:manage")

# Tasks: a task names its patient and its comments may be clinical; staff who do not see
# clinical data still work the queue (the comments are withheld from them).
_TASKS_WORK = ("tasks:read", "tasks:update")

# Care gaps: a gap names a measure (diabetes, a cancer screening), so reading one is
# clinical; who does not see clinical data does not see gaps either.
_CAREGAPS_CARE = ("caregaps:read", "caregaps:update")

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
        **_grants(
            _NONE,
            "audit:read",
            "audit:verify",
            "locations:read",
            "locations:manage",
            "users:read",
            "users:manage",
            "clients:manage",
            *_SCHEDULING_ALL,
            *_TEMPLATES,
            "referrals:manage",
        ),
        **_grants(_ALL, "messages:read", *_REFERRALS_CARE),
        **_grants(_ALL, *_TASKS_WORK),
        "tasks:manage": _NONE,
        **_grants(_ALL, *_CAREGAPS_CARE),
        "caregaps:manage": _NONE,
    },
    "location_manager": {
        **_grants(
            _NON_CLINICAL, "patients:read", "patients:search", "patients:create", "patients:update"
        ),
        **_grants(
            _NONE, "locations:read", "users:read", *_SCHEDULING_ALL, *_TEMPLATES, "referrals:manage"
        ),
        "referrals:read": _NON_CLINICAL,
        **_grants(_NON_CLINICAL, *_TASKS_WORK),
        "tasks:manage": _NONE,
        "caregaps:manage": _NONE,
    },
    "provider": {
        **_grants(
            _ALL,
            "patients:read",
            "patients:search",
            "patients:update",
            "messages:read",
            *_REFERRALS_CARE,
        ),
        **_grants(_NONE, "locations:read", *_SCHEDULING_STAFF),
        **_grants(_ALL, *_TASKS_WORK),
        **_grants(_ALL, *_CAREGAPS_CARE),
    },
    "care_coordinator": {
        **_grants(
            _ALL,
            "patients:read",
            "patients:search",
            "patients:update",
            "messages:read",
            *_REFERRALS_CARE,
        ),
        **_grants(_NONE, "locations:read", *_SCHEDULING_STAFF, "referrals:manage"),
        **_grants(_ALL, *_TASKS_WORK),
        "tasks:manage": _NONE,
        **_grants(_ALL, *_CAREGAPS_CARE),
        "caregaps:manage": _NONE,
    },
    "front_desk": {
        **_grants(
            _NON_CLINICAL, "patients:read", "patients:search", "patients:create", "patients:update"
        ),
        **_grants(_NONE, "locations:read", *_SCHEDULING_STAFF),
        # The front desk moves referrals along (contacts, books) without reading why.
        **_grants(_NON_CLINICAL, "referrals:read", "referrals:update"),
        **_grants(_NON_CLINICAL, *_TASKS_WORK),
    },
    "billing": {
        # Authorizations are billing's work; the clinical reason is not.
        **_grants(_IDENTIFY, "patients:read", "patients:search", "referrals:read"),
        **_grants(_NONE, "locations:read", "scheduling:read"),
    },
    "auditor": _grants(_NONE, "audit:read", "audit:verify", "locations:read"),
    # Self-scheduling: the object checks keep a patient to its own appointments.
    "patient": {
        # Their own open gaps, shown as friendly reminders in the portal.
        **_grants(_ALL, "patients:read", "messages:read", "referrals:read", "caregaps:read"),
        **_grants(_NONE, *_SCHEDULING_STAFF),
    },
}

PERMISSION_TABLE: Final[Mapping[str, Mapping[str, frozenset[str]]]] = MappingProxyType(
    {role: MappingProxyType(grants) for role, grants in _TABLE.items()}
)
ROLES: Final[tuple[str, ...]] = tuple(PERMISSION_TABLE)

# Permissions that reach patient data (records, messages sent to patients, or the trail
# of who saw them). A partner may hold one as a scope only while its business associate
# agreement is current.
PHI_PERMISSIONS: Final = frozenset(
    {
        "patients:read",
        "patients:search",
        "patients:create",
        "patients:update",
        "patients:merge",
        "messages:read",
        "audit:read",
        "audit:verify",
        "referrals:read",
        "referrals:create",
        "referrals:update",
        "tasks:read",
        "tasks:update",
        "caregaps:read",
        "caregaps:update",
    }
)

# What a partner API client may be granted: scope (a permission) -> the PHI categories
# it sees through it. Partners hold no roles; anything not listed is never grantable.
_PARTNER_SCOPES: dict[str, frozenset[str]] = {
    "locations:read": _NONE,
    "patients:read": _IDENTIFY,
    "patients:search": _IDENTIFY,
    "patients:create": _IDENTIFY,
    # A referring practice's system sends referrals; like every partner scope it sees
    # nothing clinical back (the reason it sent is stored, not echoed).
    "referrals:create": _IDENTIFY,
}
PARTNER_SCOPES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(_PARTNER_SCOPES)

# What each service may do when it calls another one with its own service identity
# (token `act: service`, `sub: service:<name>`). Which services hold grants is the
# platform's list, not the kit's; `_validate` checks it against this table.
SERVICE_GRANTS: Final[Mapping[str, Mapping[str, frozenset[str]]]] = PLATFORM_SERVICE_GRANTS

# The FHIR resource type each permission guards: what a refused attempt is filed under
# in the audit trail. A permission not listed is filed under its capitalised resource.
_AUDITED_AS: dict[str, str] = {
    **dict.fromkeys(
        (
            "patients:read",
            "patients:search",
            "patients:create",
            "patients:update",
            "patients:merge",
        ),
        "Patient",
    ),
    **dict.fromkeys(("audit:read", "audit:verify"), "AuditEvent"),
    **dict.fromkeys(("referrals:read", "referrals:create", "referrals:update"), "ServiceRequest"),
    "referrals:manage": "Practitioner",
    **dict.fromkeys(("tasks:read", "tasks:update", "tasks:manage"), "Task"),
    **dict.fromkeys(("caregaps:read", "caregaps:update"), "MeasureReport"),
    "caregaps:manage": "Measure",
}
AUDITED_AS: Final[Mapping[str, str]] = MappingProxyType(_AUDITED_AS)
SERVICE_SUBJECT_PREFIX: Final = "service:"

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
    for scope, categories in PARTNER_SCOPES.items():
        if scope not in PERMISSIONS or not categories <= _ALL:
            raise ValueError(f"permission table: partner scope {scope} is invalid")
        if categories and scope not in PHI_PERMISSIONS:
            raise ValueError(f"permission table: partner scope {scope} shows PHI")
    for permission in (*PHI_PERMISSIONS, *AUDITED_AS):
        if permission not in PERMISSIONS:
            raise ValueError(f"permission table: {permission} is not a permission")
    for service, grants in SERVICE_GRANTS.items():
        for permission, categories in grants.items():
            if permission not in PERMISSIONS or not categories <= _ALL:
                raise ValueError(f"permission table: service {service} has {permission}")


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


def reaches_phi(scope: str) -> bool:
    """Whether a partner scope reaches patient data (so needs a current BAA)."""
    return scope in PHI_PERMISSIONS


def partner_categories(scopes: frozenset[str] | set[str], permission: str) -> frozenset[str]:
    """PHI categories a partner holding `scopes` sees through `permission`."""
    if permission not in scopes:
        return _NONE
    return PARTNER_SCOPES.get(permission, _NONE)


def partner_may_hold(scope: str) -> bool:
    """Whether `scope` can ever be granted to a partner client."""
    return scope in PARTNER_SCOPES


def service_subject(service: str) -> str:
    """The token `sub` of a service identity."""
    return f"{SERVICE_SUBJECT_PREFIX}{service}"


def service_of(subject: str) -> str | None:
    """The service a token `sub` names (`service:<name>`), or None."""
    if not subject.startswith(SERVICE_SUBJECT_PREFIX):
        return None
    return subject[len(SERVICE_SUBJECT_PREFIX) :] or None


def service_categories(service: str | None, permission: str) -> frozenset[str] | None:
    """PHI categories the service sees through `permission`; None when not granted."""
    if service is None:
        return None
    return SERVICE_GRANTS.get(service, {}).get(permission)


def audited_as(permission: str) -> str:
    """The FHIR resource type an attempt on `permission` is audited under."""
    resource = permission.partition(":")[0]
    return AUDITED_AS.get(permission, resource.capitalize() or "Resource")


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
- **care relationship**: staff also reach a patient with an open care relationship
  (an appointment booked or past, later a referral or a care gap) at a location in
  their `loc`, with what their roles allow, as if the patient were at that
  location; such an access is audited with purpose of use `<KIND>_RELATIONSHIP`
  (e.g. `APPOINTMENT_RELATIONSHIP`) and ends with the relationship;
- **own record**: the `patient` role reaches only the record in its token's `pat`
  claim, whatever the location.

Partner clients hold no roles: their token's `scope` lists the permissions they
were granted, from the partner scopes below. A scope that reaches PHI is granted
(and put in a token) only while the partner's business associate agreement is
current, enforced by identity. Service identities hold no roles either: each
service's grants are listed below, and nothing else.
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
    parts.append(
        "\n## Partner scopes\n\n| scope | PHI categories | needs a current BAA |\n|---|---|---|\n"
    )
    for scope, categories in PARTNER_SCOPES.items():
        baa = "yes" if reaches_phi(scope) else "no"
        parts.append(f"| `{scope}` | {_cell(categories)} | {baa} |\n")
    parts.append("\n## Service identities\n\n| service | permission | PHI categories |\n")
    parts.append("|---|---|---|\n")
    for service, grants in SERVICE_GRANTS.items():
        for permission, categories in grants.items():
            parts.append(f"| `{service}` | `{permission}` | {_cell(categories)} |\n")
    return "".join(parts)
