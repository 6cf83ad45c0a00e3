"""The fixed set of roles and the rules that tie roles, locations and patients together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from careloop_kit.auth import permissions as kit_permissions

# The role set and the MFA rule come from the one permission table every service enforces.
ROLES = kit_permissions.ROLES

ALL_LOCATIONS = "*"


class InvalidAssignment(ValueError):
    """Roles, locations and patient link do not fit together."""


@dataclass(frozen=True)
class Assignment:
    """What a user may act as: roles, location scope, and the patient of a portal account."""

    roles: tuple[str, ...]
    locations: tuple[str, ...]
    patient_id: str | None = None

    @property
    def actor_type(self) -> str:
        return "patient" if "patient" in self.roles else "user"

    @property
    def requires_mfa(self) -> bool:
        return any(kit_permissions.requires_mfa(role) for role in self.roles)


def make_assignment(
    roles: Sequence[str], locations: Sequence[str] | str, patient_id: str | None
) -> Assignment:
    """Validate and normalise an assignment (sorted, de-duplicated)."""
    unique_roles = tuple(sorted(set(roles)))
    if not unique_roles:
        raise InvalidAssignment("A user needs at least one role.")
    unknown = [r for r in unique_roles if r not in ROLES]
    if unknown:
        raise InvalidAssignment(f"Unknown roles {unknown}; allowed: {', '.join(ROLES)}.")
    if "patient" in unique_roles and len(unique_roles) > 1:
        raise InvalidAssignment("A patient portal account cannot hold staff roles.")
    if "patient" in unique_roles and not patient_id:
        raise InvalidAssignment("The patient role needs the patient_id of the linked record.")
    if "patient" not in unique_roles and patient_id:
        raise InvalidAssignment("Only a patient portal account is linked to a patient_id.")
    scope: tuple[str, ...]
    if isinstance(locations, str):
        if locations != ALL_LOCATIONS:
            raise InvalidAssignment('locations is a list of location ids or "*" for all.')
        scope = (ALL_LOCATIONS,)
    else:
        scope = tuple(sorted(set(locations)))
        if ALL_LOCATIONS in scope and len(scope) > 1:
            raise InvalidAssignment('"*" means every location; do not list others with it.')
    return Assignment(roles=unique_roles, locations=scope, patient_id=patient_id)
