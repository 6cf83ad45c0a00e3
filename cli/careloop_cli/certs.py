"""`careloop dev certs`: a local certificate authority for compose's TLS.

Local development only. It lets compose run Kafka, PostgreSQL and OpenBao with TLS
and the services verify them, with nothing committed: the CA is made on first start
inside a volume. A deployment that matters uses its own PKI (cert-manager, Vault PKI).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "Careloop local development CA (not for production)"
VALIDITY = timedelta(days=825)


@dataclass(frozen=True)
class IssuedFiles:
    created: list[Path]
    kept: list[Path]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _load_or_create_ca(
    out: Path, now: datetime, created: list[Path], kept: list[Path]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = out / "ca.crt", out / "ca.key"
    if cert_path.is_file() and key_path.is_file():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SystemExit(f"{key_path} is not an EC key; remove {out} to start over")
        kept += [cert_path, key_path]
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    created += [cert_path, key_path]
    return cert, key


def issue_local_certificates(out: Path, hosts: list[str]) -> IssuedFiles:
    """The CA (`ca.crt`, `ca.key`) and per host `<host>.crt`, `<host>.key` and `<host>.pem`
    (key, certificate and CA in one file, for Kafka's PEM keystore). Existing files are kept,
    so every container start sees the same CA.

    Host keys are readable by every user of the volume (0644): each server image runs as its
    own user, and the volume exists only inside a local compose project.
    """
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    created: list[Path] = []
    kept: list[Path] = []
    ca_cert, ca_key = _load_or_create_ca(out, now, created, kept)
    for host in dict.fromkeys(hosts):
        cert_path, key_path, pem_path = (out / f"{host}{ext}" for ext in (".crt", ".key", ".pem"))
        if cert_path.is_file() and key_path.is_file() and pem_path.is_file():
            kept += [cert_path, key_path, pem_path]
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost")]
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        _write(key_path, _key_pem(key), 0o644)
        _write(cert_path, cert_pem + ca_pem, 0o644)
        _write(pem_path, _key_pem(key) + cert_pem + ca_pem, 0o644)
        created += [cert_path, key_path, pem_path]
    return IssuedFiles(created=created, kept=kept)
