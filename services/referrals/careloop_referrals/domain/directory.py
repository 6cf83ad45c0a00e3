"""The provider directory: who refers to the practice and whom it refers to.

An entry is a provider (a person, NPI type 1) or an organization (NPI type 2), inside
the practice (`internal`) or outside it. The outcome of a referral goes back to the
referring entry through its preferred channel, so an entry must carry the address that
channel needs. Direct also needs the recipient's certificate: the report is encrypted to
it, so an entry preferring Direct carries the PEM its HISP published for the address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

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

# Every contact field a channel needs to deliver, the address first.
CHANNEL_NEEDS: dict[Channel, tuple[str, ...]] = {
    Channel.SECURE_EMAIL: ("email",),
    Channel.DIRECT: ("direct_address", "direct_certificate"),
    Channel.FAX: ("fax",),
}

# The Direct Project's certificate policy: RSA keys of 2048 bits at least.
MIN_RSA_BITS = 2048
# International form, as fax providers dial it: + country code, then the number.
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_DIAL_SEPARATORS = re.compile(r"[\s().-]")


class InvalidEntry(ValueError):
    """The entry breaks a directory rule; the message names it."""


@dataclass(frozen=True)
class Contact:
    email: str | None = None
    phone: str | None = None
    fax: str | None = None
    direct_address: str | None = None
    direct_certificate: str | None = None  # PEM: the X.509 certificate of `direct_address`


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
    contact = entry.contact
    if contact.fax is not None:
        contact = replace(contact, fax=fax_number(contact.fax))
    if contact.direct_certificate is not None:
        pem = direct_certificate(contact.direct_certificate, contact.direct_address)
        contact = replace(contact, direct_certificate=pem)
    return replace(entry, npi=npi, name=entry.name.strip(), contact=contact)


def missing_for(contact: Contact, channel: Channel) -> list[str]:
    """The contact fields `channel` needs that `contact` lacks."""
    return [name for name in CHANNEL_NEEDS[channel] if not getattr(contact, name)]


def fax_number(value: str) -> str:
    """`value` in international form (`+15550100`), or `InvalidEntry`. Spaces, dots,
    dashes and parentheses are dropped; a number without its country code is refused, as
    a fax provider would dial it somewhere else."""
    number = _DIAL_SEPARATORS.sub("", value)
    if not _E164.match(number):
        raise InvalidEntry(
            f"The fax number {value!r} is not in international form: write + and the "
            "country code first (e.g. +1 555 0100)."
        )
    return number


def direct_certificate(pem: str, address: str | None) -> str:
    """The PEM of the certificate a Direct report to `address` is encrypted to, or
    `InvalidEntry` saying what is wrong with it. A HISP publishes either an
    address-bound certificate (the address in its subjectAltName) or an
    organization-bound one (the address's domain as a dNSName)."""
    if not address:
        raise InvalidEntry("A Direct certificate goes with a contact `direct_address`.")
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise InvalidEntry(
            "The Direct certificate is not a PEM X.509 certificate "
            "(-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)."
        ) from exc
    if len(certificates) != 1:
        raise InvalidEntry(
            f"The Direct certificate holds {len(certificates)} certificates: give the "
            "recipient's own certificate only, not its chain."
        )
    [certificate] = certificates
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        raise InvalidEntry(
            f"The Direct certificate must hold an RSA key of {MIN_RSA_BITS} bits or more "
            "(S/MIME encryption to it)."
        )
    problem = _usage_problem(certificate)
    if problem is None:
        problem = _binding_problem(certificate, address)
    if problem is not None:
        raise InvalidEntry(problem)
    return certificate.public_bytes(Encoding.PEM).decode()


def _usage_problem(certificate: x509.Certificate) -> str | None:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not usage.key_encipherment:
            return "The Direct certificate's key usage does not allow key encipherment."
    try:
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if not allowed & set(extended):
        return "The Direct certificate's extended key usage does not include email protection."
    return None


def _binding_problem(certificate: x509.Certificate, address: str) -> str | None:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = x509.SubjectAlternativeName([])
    emails = {name.lower() for name in names.get_values_for_type(x509.RFC822Name)}
    domains = {name.lower() for name in names.get_values_for_type(x509.DNSName)}
    domain = address.rpartition("@")[2].lower()
    if address.lower() in emails or domain in domains:
        return None
    return (
        f"The Direct certificate is not bound to {address}: its subjectAltName names "
        f"neither the address nor its domain {domain}."
    )
