"""Lookups of the catalog every booking path needs: providers, types, a location's zone."""

from __future__ import annotations

from careloop_kit.problems import NotFound
from careloop_scheduling.domain.catalog import AppointmentType, Provider
from careloop_scheduling.store.repository import Repositories
from careloop_scheduling.usecases.common import InvalidScheduling


async def load_provider(repos: Repositories, org_id: str, provider_id: str) -> Provider:
    found = await repos.catalog.get_provider(org_id, provider_id)
    if found is None:
        # Another tenant's provider is indistinguishable from a missing one.
        raise NotFound(f"No provider {provider_id} in this organization.")
    return found


async def load_type(repos: Repositories, org_id: str, type_id: str) -> AppointmentType:
    found = await repos.catalog.get_type(org_id, type_id)
    if found is None:
        raise NotFound(f"No appointment type {type_id} in this organization.")
    return found


async def zone_of(repos: Repositories, org_id: str, location_id: str) -> str:
    """The location's IANA zone; slots cannot be computed without it."""
    zone = await repos.locations.time_zone(org_id, location_id)
    if zone is None:
        raise InvalidScheduling(
            f"Location {location_id} has no time zone yet: scheduling learns it from "
            "identity's location events (create the location in identity first)."
        )
    return zone
