"""Certificates for the local secure broker (`rollout dev-kafka start --secure`).

A throwaway CA and a server certificate signed by it for 127.0.0.1 and localhost, written as
PEM files that Kafka reads directly (`ssl.keystore.type=PEM`), and client certificates signed
by the same CA for the mTLS listener (`CN=<user>`, which the broker maps to `User:<user>`).
Development only: the keys are unencrypted and sit next to the broker's data. Needs the
`cryptography` package (a dev extra).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import RolloutError

VALID_DAYS = 825


class DevTlsError(RolloutError):
    """The certificates could not be made; the message says what to install."""


@dataclass(frozen=True)
class TlsMaterial:
    """The files of one broker: the CA clients trust, and the broker's key and certificate
    (`server_pem`: key then certificate, Kafka's PEM keystore)."""

    ca_file: Path
    server_pem: Path
    ca_key: Path

    def exists(self) -> bool:
        return all(p.is_file() for p in (self.ca_file, self.server_pem, self.ca_key))


@dataclass(frozen=True)
class ClientCertificate:
    """A client's certificate and its key (PEM), for `ssl_certfile` / `ssl_keyfile`."""

    certfile: Path
    keyfile: Path


def ensure_certificates(
    directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> TlsMaterial:
    """The CA and server files in `directory`, made on the first call and reused after."""
    material = TlsMaterial(directory / "ca.pem", directory / "server.pem", directory / "ca-key.pem")
    if material.exists():
        return material
    x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID = _crypto()

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rollout dev-kafka CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(x509), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
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

    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    key_pem = server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    material.server_pem.write_bytes(key_pem + server_cert.public_bytes(pem))
    material.server_pem.chmod(0o600)
    material.ca_file.write_bytes(ca_cert.public_bytes(pem))
    _write_private(
        material.ca_key,
        ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return material


def client_certificate(material: TlsMaterial, name: str, directory: Path) -> ClientCertificate:
    """A client certificate for `CN=<name>` signed by the CA of `material`, made on the first
    call (in `directory`, as `<name>.crt` and `<name>.key`) and reused after."""
    client = ClientCertificate(directory / f"{name}.crt", directory / f"{name}.key")
    if client.certfile.is_file() and client.keyfile.is_file():
        return client
    x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID = _crypto()
    ca_cert = x509.load_pem_x509_certificate(material.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(material.ca_key.read_bytes(), password=None)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    _write_private(
        client.keyfile,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    client.certfile.write_bytes(cert.public_bytes(pem))
    return client


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _crypto() -> tuple[Any, Any, Any, Any, Any, Any]:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise DevTlsError(
            "the secure broker's certificates need the `cryptography` package: install the "
            "project's dev extra (pip install -e '.[dev]')"
        ) from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _ca_key_usage(x509: Any) -> Any:
    """A CA key signs certificates (and revocation lists), nothing else."""
    flags = dict.fromkeys(
        (
            "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
            "encipher_only", "decipher_only",
        ),
        False,
    )  # fmt: skip
    return x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **flags)
