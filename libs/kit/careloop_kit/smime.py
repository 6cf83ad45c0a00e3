"""S/MIME identities made on the spot: an RSA key and a self-signed certificate bound to
one address, usable for signing and encryption as Direct messaging expects (key
encipherment, email protection, the address as subjectAltName). The tests make their
senders and recipients with it, and the demo practice gives its synthetic Direct
provider one; production keys and certificates come from the practice's HISP, in Vault.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONTENT_ENCRYPTION = algorithms.AES256
"""The content cipher of an S/MIME envelope (AES-256-CBC): chosen here, with the kit's
other cryptography, so a service never names a cipher itself."""


@dataclass(frozen=True)
class SmimeIdentity:
    """A fresh key and its self-signed certificate for one address."""

    address: str
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def smime_identity(
    address: str, *, bits: int = 2048, valid_from: datetime | None = None, days: int = 365
) -> SmimeIdentity:
    """A fresh RSA key and a certificate bound to `address` (subjectAltName rfc822Name),
    usable for S/MIME signing and encryption."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    start = valid_from or datetime.now(UTC) - timedelta(days=1)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return SmimeIdentity(address, key, certificate)
