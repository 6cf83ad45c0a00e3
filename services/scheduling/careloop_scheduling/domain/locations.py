"""What scheduling knows of a location (identity owns it; scheduling keeps a view from
its events), and the two rules that view carries: which workflows run there, and who
may see what happens at a sensitive location."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from careloop_contracts.identity import LocationFeature, feature_enabled

ALL_LOCATIONS = "*"


@dataclass(frozen=True)
class LocationInfo:
    """A location as identity last announced it: zone, name, sensitivity, switches."""

    id: str
    time_zone: str
    display_name: str | None
    sensitive: bool
    features: Mapping[str, bool] = field(default_factory=dict)

    def runs(self, feature: LocationFeature) -> bool:
        """Whether the workflow `feature` runs here (a switch never set is on)."""
        return feature_enabled(self.features, feature)


def sees_sensitive(*, is_patient: bool, locations: tuple[str, ...], location_id: str) -> bool:
    """Whether a staff member with this location scope sees the records of the
    sensitive location `location_id`: only when the location is named in the scope
    itself. Every location (`*`) is not enough, so an org-wide administrator or a
    provider of other locations does not see them. A patient account is not judged
    here: it sees its own records wherever they are."""
    if is_patient:
        return True
    return location_id in locations and location_id != ALL_LOCATIONS
