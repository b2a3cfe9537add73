"""Kafka connection options, translated from the settings in one place.

Three Kafka clients connect to the brokers, and each spells the same connection differently:

- **kafka-python** (the SDK, the CLI, topic creation): keyword options with the TLS files by
  name (`kafka_python_options`, also `Settings.kafka_client_options()`);
- **aiokafka** (the worker's prediction lane, the benchmark): keyword options with a ready
  `ssl.SSLContext` (`aiokafka_options`);
- **Faust** (the worker's app): a list of `kafka://` broker URLs and a credentials object
  (`faust_broker`, `faust_credentials`).

`connection(settings)` reads the settings once into a `Connection` and checks that they make
sense together; the three translations render that one value. A setting that would be ignored
(SASL credentials under PLAINTEXT, TLS files without TLS) or cannot work (an unknown protocol, a
SASL mechanism that needs more than a username and a password) is a `KafkaOptionsError` that
says which variable to change, never a client that quietly connects some other way.
"""

from __future__ import annotations

import dataclasses
import enum
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.errors import RolloutError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from controller.settings import Settings


class KafkaOptionsError(RolloutError):
    """The connection settings do not make sense together; the message says what to change."""


class SecurityProtocol(enum.StrEnum):
    """How clients talk to the brokers (Kafka's `security.protocol`)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def uses_tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


class SaslMechanism(enum.StrEnum):
    """The SASL mechanisms a username and a password are enough for (all three clients name
    them `sasl_plain_username` / `sasl_plain_password`, SCRAM included)."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


@dataclass(frozen=True)
class SaslLogin:
    mechanism: SaslMechanism
    username: str
    password: str = dataclasses.field(repr=False)  # never in a log line or a traceback


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA that signed the brokers' certificates (default: the system's) and the
    client's certificate and key, for brokers that require one (the key may sit in certfile)."""

    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


@dataclass(frozen=True)
class Connection:
    """Where the brokers are and how to reach them: the settings, checked."""

    bootstrap: tuple[str, ...]
    protocol: SecurityProtocol
    sasl: SaslLogin | None = None
    tls: TlsFiles | None = None


def _known(values: type[enum.StrEnum]) -> str:
    return ", ".join(v.value for v in values)


def connection(settings: Settings) -> Connection:
    """Read and check the connection settings; raises KafkaOptionsError when they disagree."""
    bootstrap = tuple(h.strip() for h in settings.bootstrap_servers.split(",") if h.strip())
    if not bootstrap:
        raise KafkaOptionsError(
            "no Kafka broker given: set KAFKA_BOOTSTRAP_SERVERS to host:port[,host:port...]"
        )
    try:
        protocol = SecurityProtocol(settings.security_protocol.strip().upper())
    except ValueError:
        raise KafkaOptionsError(
            f"unknown ROLLOUT_SECURITY_PROTOCOL {settings.security_protocol!r}; "
            f"known: {_known(SecurityProtocol)}"
        ) from None
    return Connection(bootstrap, protocol, _sasl(settings, protocol), _tls(settings, protocol))


def _sasl(settings: Settings, protocol: SecurityProtocol) -> SaslLogin | None:
    given = [
        name
        for name, value in (
            ("ROLLOUT_SASL_MECHANISM", settings.sasl_mechanism),
            ("ROLLOUT_SASL_USERNAME", settings.sasl_username),
            ("ROLLOUT_SASL_PASSWORD", settings.sasl_password),
        )
        if value
    ]
    if not protocol.uses_sasl:
        if given:
            raise KafkaOptionsError(
                f"{', '.join(given)} set, but ROLLOUT_SECURITY_PROTOCOL is {protocol}, which "
                "does not use SASL: set it to SASL_PLAINTEXT or SASL_SSL, or unset the SASL "
                "settings"
            )
        return None
    if not settings.sasl_mechanism:
        raise KafkaOptionsError(
            f"ROLLOUT_SECURITY_PROTOCOL is {protocol}: set ROLLOUT_SASL_MECHANISM "
            f"({_known(SaslMechanism)})"
        )
    try:
        mechanism = SaslMechanism(settings.sasl_mechanism.strip().upper())
    except ValueError:
        raise KafkaOptionsError(
            f"unsupported ROLLOUT_SASL_MECHANISM {settings.sasl_mechanism!r}; "
            f"supported (username and password): {_known(SaslMechanism)}"
        ) from None
    if not settings.sasl_username or settings.sasl_password is None:
        raise KafkaOptionsError(
            f"SASL {mechanism} needs ROLLOUT_SASL_USERNAME and ROLLOUT_SASL_PASSWORD"
        )
    return SaslLogin(mechanism, settings.sasl_username, settings.sasl_password)


def _tls(settings: Settings, protocol: SecurityProtocol) -> TlsFiles | None:
    files = TlsFiles(
        cafile=settings.ssl_cafile or None,
        certfile=settings.ssl_certfile or None,
        keyfile=settings.ssl_keyfile or None,
    )
    if not protocol.uses_tls:
        given = [f"ROLLOUT_SSL_{f.name.upper()}" for f in _set_fields(files)]
        if given:
            raise KafkaOptionsError(
                f"{', '.join(given)} set, but ROLLOUT_SECURITY_PROTOCOL is {protocol}, which "
                "does not use TLS: set it to SSL or SASL_SSL, or unset the files"
            )
        return None
    if files.keyfile and not files.certfile:
        raise KafkaOptionsError(
            "ROLLOUT_SSL_KEYFILE set without ROLLOUT_SSL_CERTFILE: a client key needs its "
            "certificate"
        )
    return files


def _set_fields(files: TlsFiles) -> list[dataclasses.Field[str | None]]:
    return [f for f in dataclasses.fields(files) if getattr(files, f.name)]


def ssl_context(conn: Connection) -> ssl.SSLContext | None:
    """The client TLS context (aiokafka's `create_ssl_context`: hostnames are checked), or None
    when the protocol does not use TLS. A file that cannot be loaded is a KafkaOptionsError."""
    if conn.tls is None:
        return None
    from aiokafka.helpers import create_ssl_context

    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=conn.tls.cafile, certfile=conn.tls.certfile, keyfile=conn.tls.keyfile
        )
    except (OSError, ssl.SSLError) as exc:
        raise KafkaOptionsError(
            f"cannot load the TLS files (ROLLOUT_SSL_CAFILE, ROLLOUT_SSL_CERTFILE, "
            f"ROLLOUT_SSL_KEYFILE): {exc}"
        ) from exc
    return context


def _client_options(conn: Connection) -> dict[str, Any]:
    """What kafka-python and aiokafka spell alike: brokers, protocol, SASL login."""
    opts: dict[str, Any] = {
        "bootstrap_servers": list(conn.bootstrap),
        "security_protocol": conn.protocol.value,
    }
    if conn.sasl is not None:
        opts.update(
            sasl_mechanism=conn.sasl.mechanism.value,
            sasl_plain_username=conn.sasl.username,
            sasl_plain_password=conn.sasl.password,
        )
    return opts


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Connection options for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient.

    TLS goes by file name (`ssl_cafile`, `ssl_certfile`, `ssl_keyfile`: TlsFiles' fields):
    kafka-python builds its own context from them.
    """
    conn = connection(settings)
    opts = _client_options(conn)
    if conn.tls is not None:
        opts.update({f"ssl_{f.name}": getattr(conn.tls, f.name) for f in _set_fields(conn.tls)})
    return opts


def group_timing(settings: Settings) -> dict[str, int]:
    """aiokafka consumer-group timings from the settings: a worker's consumers fail over as fast
    as the rollout agent's (controller.settings), not after aiokafka's defaults."""
    return {
        "session_timeout_ms": round(settings.session_timeout_s * 1000),
        "heartbeat_interval_ms": round(settings.heartbeat_interval_s * 1000),
        "rebalance_timeout_ms": round(settings.rebalance_timeout_s * 1000),
    }


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Connection options for aiokafka's AIOKafkaProducer and AIOKafkaConsumer, with an
    `ssl_context` when the protocol uses TLS (aiokafka takes no file names)."""
    conn = connection(settings)
    opts = _client_options(conn)
    context = ssl_context(conn)
    if context is not None:
        opts["ssl_context"] = context
    return opts


def faust_broker(settings: Settings) -> list[str]:
    """Faust's `broker` argument: one `kafka://host:port` URL per bootstrap server."""
    return [f"kafka://{host}" for host in connection(settings).bootstrap]


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's `broker_credentials` argument, or None for PLAINTEXT.

    Faust tells SASL_SSL from SASL_PLAINTEXT by whether SASLCredentials has a context, so the
    context is passed exactly when the protocol uses TLS; Faust's aiokafka driver then connects
    with the same options as `aiokafka_options`.
    """
    import faust

    conn = connection(settings)
    context = ssl_context(conn)
    if conn.sasl is not None:
        return faust.SASLCredentials(
            username=conn.sasl.username,
            password=conn.sasl.password,
            mechanism=conn.sasl.mechanism.value,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
