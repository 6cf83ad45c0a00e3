"""The provider directory: who refers to the practice and whom it refers to.

An entry is a provider (a person, NPI type 1) or an organization (NPI type 2), inside
the practice (`internal`) or outside it. The outcome of a referral goes back to the
referring entry through its preferred channel, so an entry must carry the address that
channel needs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from careloop_referrals.domain.npi import InvalidNpi, validate_npi


class EntryKind(StrEnum):
    PROVIDER = "provider"
    ORGANIZATION = "organization"


class Channel(StrEnum):
    SECURE_EMAIL = "secure-email"
    DIRECT = "direct"
    FAX = "fax"


# The contact field each channel delivers to.
CHANNEL_ADDRESS: dict[Channel, str] = {
    Channel.SECURE_EMAIL: "email",
    Channel.DIRECT: "direct_address",
    Channel.FAX: "fax",
}


class InvalidEntry(ValueError):
    """The entry breaks a directory rule; the message names it."""


@dataclass(frozen=True)
class Contact:
    email: str | None = None
    phone: str | None = None
    fax: str | None = None
    direct_address: str | None = None


@dataclass(frozen=True)
class DirectoryEntry:
    id: str
    org_id: str
    kind: EntryKind
    npi: str | None
    name: str
    specialty: str | None
    contact: Contact
    preferred_channel: Channel
    internal: bool
    active: bool = True


def checked(entry: DirectoryEntry) -> DirectoryEntry:
    """The entry with its NPI normalised, or `InvalidEntry` naming the broken rule."""
    npi = entry.npi
    if npi is not None:
        try:
            npi = validate_npi(npi)
        except InvalidNpi as exc:
            raise InvalidEntry(str(exc)) from exc
        expected = "1" if entry.kind is EntryKind.PROVIDER else "2"
        if npi[0] != expected:
            raise InvalidEntry(
                f"A {entry.kind} has an NPI starting with {expected} (type "
                f"{expected} NPI); {npi} is of the other type."
            )
    if not entry.name.strip():
        raise InvalidEntry("A directory entry needs a name.")
    address_field = CHANNEL_ADDRESS[entry.preferred_channel]
    if not getattr(entry.contact, address_field):
        raise InvalidEntry(
            f"The preferred channel {entry.preferred_channel} needs a contact "
            f"`{address_field}` to deliver outcome reports to."
        )
    return replace(entry, npi=npi, name=entry.name.strip())
