"""The settings become the same connection for kafka-python, aiokafka and Faust.

TLS contexts are not compared by identity: a throwaway CA signs a server and a client
certificate, and each context does a real TLS handshake (in memory) with a server that trusts
that CA. A context that lost the CA file cannot verify the server; one that lost the client
certificate shows the server no client.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism

from controller.kafka_options import (
    KafkaOptionsError,
    aiokafka_options,
    faust_broker,
    faust_credentials,
    kafka_python_options,
)
from controller.settings import Settings, load_settings

BROKERS = "kafka-1:9093, kafka-2:9093"
BROKER_LIST = ["kafka-1:9093", "kafka-2:9093"]
FAUST_BROKERS = ["kafka://kafka-1:9093", "kafka://kafka-2:9093"]
CLIENT_NAME = "rollout-test-client"


# ---- a throwaway PKI ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for `localhost` and a client certificate, all signed by it:
    with the `cryptography` package when it is installed, else with the `openssl` command."""
    root = tmp_path_factory.mktemp("pki")
    try:
        import cryptography  # noqa: F401  # only: is it there?
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl command is available")
        return _pki_with_openssl(root)
    return _pki_with_cryptography(root)


def _pki_with_cryptography(root: Path) -> Pki:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("rollout-test-ca"))
        .issuer_name(name("rollout-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: bool) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH, san=True)
    client_key, client_cert = leaf(CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH, san=False)
    return Pki(
        ca=write_cert(ca_cert, root / "ca.pem"),
        server_cert=write_cert(server_cert, root / "server.pem"),
        server_key=write_key(server_key, root / "server.key"),
        client_cert=write_cert(client_cert, root / "client.pem"),
        client_key=write_key(client_key, root / "client.key"),
    )


def _pki_with_openssl(root: Path) -> Pki:
    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], cwd=root, check=True, capture_output=True)

    ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec_key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=rollout-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip

    def leaf(stem: str, cn: str, extensions: str) -> None:
        (root / f"{stem}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "authorityKeyIdentifier=keyid\n"
            "subjectKeyIdentifier=hash\n" + extensions
        )
        openssl("req", "-new", *ec_key, "-keyout", f"{stem}.key", "-out", f"{stem}.csr",
                "-subj", f"/CN={cn}")  # fmt: skip
        openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-set_serial", "0x" + stem.encode().hex(), "-days", "1",
                "-extfile", f"{stem}.ext", "-out", f"{stem}.pem")  # fmt: skip

    leaf("server", "localhost", "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n")
    leaf("client", CLIENT_NAME, "extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=root / "server.key",
        client_cert=root / "client.pem",
        client_key=root / "client.key",
    )


def client_seen_by_server(client: ssl.SSLContext, pki: Pki) -> str | None:
    """A TLS handshake in memory between `client` and a server of the throwaway PKI that asks
    for a client certificate; the common name the server saw (None: no client certificate).
    Raises ssl.SSLError when the client cannot verify the server."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    server.load_verify_locations(pki.ca)
    server.verify_mode = ssl.CERT_OPTIONAL
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_hostname="localhost")
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    pending = [client_end, server_end]
    for _ in range(10):
        for end in list(pending):
            try:
                end.do_handshake()
                pending.remove(end)
            except ssl.SSLWantReadError:
                pass
        if not pending:
            break
    assert not pending, "the handshake did not finish"
    peer = server_end.getpeercert()
    if not peer:
        return None
    return dict(item for rdn in peer["subject"] for item in rdn)["commonName"]


# ---- the four connections -------------------------------------------------------------------


def plaintext() -> Settings:
    return load_settings(bootstrap_servers=BROKERS)


def sasl_plaintext_plain() -> Settings:
    return load_settings(
        bootstrap_servers=BROKERS,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password="secret-1",
    )


def sasl_ssl_scram(pki: Pki) -> Settings:
    return load_settings(
        bootstrap_servers=BROKERS,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="bob",
        sasl_password="secret-2",
        ssl_cafile=str(pki.ca),
    )


def ssl_client_cert(pki: Pki) -> Settings:
    return load_settings(
        bootstrap_servers=BROKERS,
        security_protocol="SSL",
        ssl_cafile=str(pki.ca),
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
    )


def without_context(options: dict[str, Any]) -> tuple[dict[str, Any], ssl.SSLContext | None]:
    rest = dict(options)
    return rest, rest.pop("ssl_context", None)


# ---- PLAINTEXT ------------------------------------------------------------------------------


def test_plaintext_is_brokers_and_protocol_only() -> None:
    settings = plaintext()

    assert {"bootstrap_servers": BROKER_LIST, "security_protocol": "PLAINTEXT"} == (
        kafka_python_options(settings)
    )
    assert {"bootstrap_servers": BROKER_LIST, "security_protocol": "PLAINTEXT"} == (
        aiokafka_options(settings)
    )
    assert FAUST_BROKERS == faust_broker(settings)
    assert faust_credentials(settings) is None


# ---- SASL_PLAINTEXT, PLAIN ------------------------------------------------------------------


def test_sasl_plaintext_carries_the_login_and_no_tls() -> None:
    settings = sasl_plaintext_plain()
    expected = {
        "bootstrap_servers": BROKER_LIST,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "secret-1",
    }

    assert expected == kafka_python_options(settings)
    assert expected == aiokafka_options(settings)
    assert FAUST_BROKERS == faust_broker(settings)


def test_sasl_plaintext_gives_faust_sasl_credentials_without_a_context() -> None:
    credentials = faust_credentials(sasl_plaintext_plain())

    assert isinstance(credentials, faust.SASLCredentials)
    assert (AuthProtocol.SASL_PLAINTEXT, SASLMechanism.PLAIN, "alice", "secret-1", None) == (
        credentials.protocol,
        credentials.mechanism,
        credentials.username,
        credentials.password,
        credentials.ssl_context,
    )


# ---- SASL_SSL, SCRAM-SHA-512, a CA file -----------------------------------------------------


def test_sasl_ssl_scram_gives_kafka_python_the_login_and_the_ca_file(pki: Pki) -> None:
    assert {
        "bootstrap_servers": BROKER_LIST,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "bob",
        "sasl_plain_password": "secret-2",
        "ssl_cafile": str(pki.ca),
    } == kafka_python_options(sasl_ssl_scram(pki))


def test_sasl_ssl_scram_gives_aiokafka_the_login_and_a_context_that_trusts_the_ca(
    pki: Pki,
) -> None:
    options, context = without_context(aiokafka_options(sasl_ssl_scram(pki)))

    assert {
        "bootstrap_servers": BROKER_LIST,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "bob",
        "sasl_plain_password": "secret-2",
    } == options
    assert context is not None
    assert client_seen_by_server(context, pki) is None  # verified the server; no client cert


def test_sasl_ssl_scram_gives_faust_sasl_credentials_with_the_context(pki: Pki) -> None:
    credentials = faust_credentials(sasl_ssl_scram(pki))

    assert isinstance(credentials, faust.SASLCredentials)
    assert (AuthProtocol.SASL_SSL, SASLMechanism.SCRAM_SHA_512, "bob", "secret-2") == (
        credentials.protocol,
        credentials.mechanism,
        credentials.username,
        credentials.password,
    )
    assert credentials.ssl_context is not None
    assert client_seen_by_server(credentials.ssl_context, pki) is None
    assert FAUST_BROKERS == faust_broker(sasl_ssl_scram(pki))


# ---- SSL with a client certificate ----------------------------------------------------------


def test_ssl_gives_kafka_python_the_three_files(pki: Pki) -> None:
    assert {
        "bootstrap_servers": BROKER_LIST,
        "security_protocol": "SSL",
        "ssl_cafile": str(pki.ca),
        "ssl_certfile": str(pki.client_cert),
        "ssl_keyfile": str(pki.client_key),
    } == kafka_python_options(ssl_client_cert(pki))


def test_ssl_gives_aiokafka_a_context_that_presents_the_client_certificate(pki: Pki) -> None:
    options, context = without_context(aiokafka_options(ssl_client_cert(pki)))

    assert {"bootstrap_servers": BROKER_LIST, "security_protocol": "SSL"} == options
    assert context is not None
    assert CLIENT_NAME == client_seen_by_server(context, pki)


def test_ssl_gives_faust_ssl_credentials_that_present_the_client_certificate(pki: Pki) -> None:
    credentials = faust_credentials(ssl_client_cert(pki))

    assert isinstance(credentials, faust.SSLCredentials)
    assert AuthProtocol.SSL == credentials.protocol
    assert CLIENT_NAME == client_seen_by_server(credentials.context, pki)


# ---- Faust connects as the lane does --------------------------------------------------------


CONNECTIONS: dict[str, Callable[[Pki], Settings]] = {
    "PLAINTEXT": lambda _: plaintext(),
    "SASL_PLAINTEXT PLAIN": lambda _: sasl_plaintext_plain(),
    "SASL_SSL SCRAM-SHA-512": sasl_ssl_scram,
    "SSL with a client certificate": ssl_client_cert,
}


@pytest.mark.parametrize("name", CONNECTIONS)
def test_faust_turns_its_credentials_into_the_lanes_aiokafka_options(name: str, pki: Pki) -> None:
    settings = CONNECTIONS[name](pki)

    via_faust, faust_context = without_context(
        dict(credentials_to_aiokafka_auth(faust_credentials(settings)))
    )
    lane, lane_context = without_context(aiokafka_options(settings))
    del lane["bootstrap_servers"]  # Faust passes its broker URLs on its own

    assert lane == via_faust
    assert (lane_context is None) == (faust_context is None)


def test_the_settings_method_is_the_kafka_python_translation(pki: Pki) -> None:
    settings = ssl_client_cert(pki)

    assert kafka_python_options(settings) == settings.kafka_client_options()


# ---- settings that do not make sense together -----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"security_protocol": "TLS"}, "known: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({"sasl_mechanism": "PLAIN", "sasl_username": "a"}, "does not use SASL"),
        ({"ssl_cafile": "ca.pem"}, "ROLLOUT_SSL_CAFILE set, but"),
        ({"security_protocol": "SASL_SSL", "sasl_username": "a"}, "set ROLLOUT_SASL_MECHANISM"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI"},
            "supported (username and password): PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
            "needs ROLLOUT_SASL_USERNAME and ROLLOUT_SASL_PASSWORD",
        ),
        ({"security_protocol": "SSL", "ssl_keyfile": "k.pem"}, "without ROLLOUT_SSL_CERTFILE"),
        ({"bootstrap_servers": " , "}, "set KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_settings_that_disagree_are_an_error_that_says_what_to_change(
    overrides: dict[str, str], says: str
) -> None:
    settings = load_settings(**{"bootstrap_servers": BROKERS, **overrides})

    for translate in (kafka_python_options, aiokafka_options, faust_broker, faust_credentials):
        with pytest.raises(KafkaOptionsError) as raised:
            translate(settings)
        assert says in str(raised.value)


def test_a_tls_file_that_cannot_be_loaded_is_an_error_naming_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        bootstrap_servers=BROKERS,
        security_protocol="SSL",
        ssl_cafile=str(tmp_path / "missing-ca.pem"),
    )

    with pytest.raises(KafkaOptionsError, match="cannot load the TLS files"):
        aiokafka_options(settings)


def test_protocol_and_mechanism_are_read_in_any_case() -> None:
    settings = load_settings(
        bootstrap_servers=BROKERS,
        security_protocol="sasl_plaintext",
        sasl_mechanism="scram-sha-256",
        sasl_username="carol",
        sasl_password="secret-3",
    )

    assert ("SASL_PLAINTEXT", "SCRAM-SHA-256") == (
        kafka_python_options(settings)["security_protocol"],
        kafka_python_options(settings)["sasl_mechanism"],
    )
