"""kafka-python clients for the CLI, made only after the brokers answered a pre-flight probe.

A kafka-python client that cannot reach its brokers retries quietly until its bootstrap
timeout (30 s) and ends in "Unable to bootstrap", whatever the cause: nothing listening, a
name that does not resolve, a port of some other server, a TLS or SASL listener spoken to in
the clear, a wrong password. `probe` asks one broker at a time itself, bounded by
ROLLOUT_CONNECT_TIMEOUT_S, and stops at the first step that fails, so the error says which:

1. resolve the name;                    KafkaUnreachableError: "does not resolve"
2. open a TCP connection;               KafkaUnreachableError: "connection refused", "no answer"
3. the TLS handshake (SSL, SASL_SSL);   KafkaTlsError
4. ApiVersions, Kafka's first request;  KafkaUnreachableError: "does not answer as Kafka"
5. SASL handshake and authentication;   KafkaAuthenticationError
6. a Metadata request (a listener that wants SASL closes the connection here).

The requests are written by hand (a few non-flexible versions that Kafka 4 still serves), so
the probe reads the answers itself instead of kafka-python's logs. `producer`, `consumer` and
`admin` probe first and then build the client with the same timeout, so a broker that goes
away between the two still fails within it (as kafka-python's KafkaTimeoutError, which the
CLI words with `describe_kafka_error`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Any

from controller.errors import InvariantError, RolloutError
from controller.kafka_options import Connection, SaslMechanism, connection, ssl_context
from controller.settings import Settings

CLIENT_ID = "rollout-probe"
#: A frame larger than this is no Kafka answer to our requests (an HTTP reply reads as ~1.2 GB).
MAX_FRAME = 16 * 1024 * 1024


class KafkaUnreachableError(RolloutError):
    """The brokers cannot be reached or do not answer as Kafka; the message says why."""


class KafkaTlsError(KafkaUnreachableError):
    """The TLS handshake with a broker failed."""


class KafkaAuthenticationError(KafkaUnreachableError):
    """A broker refused the SASL login (or the mechanism)."""


# --- the probe -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Broker:
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _brokers(conn: Connection) -> list[_Broker]:
    brokers = []
    for entry in conn.bootstrap:
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit():
            raise KafkaUnreachableError(
                f"{entry!r} is not host:port: set KAFKA_BOOTSTRAP_SERVERS to "
                "host:port[,host:port...]"
            )
        brokers.append(_Broker(host.strip("[]"), int(port)))
    return brokers


def probe(settings: Settings) -> None:
    """Return when one of the bootstrap brokers answers as Kafka (and accepts the login, if
    any); else raise the error of the first broker tried (all of them, when there are several).
    The whole probe takes at most ROLLOUT_CONNECT_TIMEOUT_S."""
    conn = connection(settings)
    brokers = _brokers(conn)
    deadline = time.monotonic() + settings.connect_timeout_s
    failures: list[KafkaUnreachableError] = []
    for n, broker in enumerate(brokers):
        # the time left is shared among the brokers not yet tried
        share = (deadline - time.monotonic()) / (len(brokers) - n)
        try:
            _probe_one(conn, broker, max(share, 0.1))
            return
        except KafkaUnreachableError as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    authentication = [f for f in failures if isinstance(f, KafkaAuthenticationError)]
    if authentication:
        raise authentication[0]
    raise KafkaUnreachableError(
        f"none of the {len(brokers)} Kafka brokers answered: " + "; ".join(map(str, failures))
    )


def _probe_one(conn: Connection, broker: _Broker, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    sock = _connect(broker, timeout_s)
    try:
        if conn.protocol.uses_tls:
            sock = _tls_handshake(conn, broker, sock, deadline)
        wire = _Wire(sock, broker, deadline, conn)
        wire.api_versions()
        if conn.sasl is not None:
            wire.authenticate(conn.sasl.mechanism, conn.sasl.username, conn.sasl.password)
        wire.metadata()
    finally:
        sock.close()


def _connect(broker: _Broker, timeout_s: float) -> socket.socket:
    at = broker.address
    check = "check KAFKA_BOOTSTRAP_SERVERS"
    try:
        infos = socket.getaddrinfo(broker.host, broker.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise KafkaUnreachableError(
            f"cannot reach Kafka at {at}: the name {broker.host!r} does not resolve "
            f"({exc.strerror}); {check}"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.settimeout(timeout_s)
    try:
        sock.connect(address)
    except ConnectionRefusedError:
        sock.close()
        raise KafkaUnreachableError(
            f"cannot reach Kafka at {at}: connection refused, nothing listens there; start the "
            f"broker or {check}"
        ) from None
    except TimeoutError:
        sock.close()
        raise KafkaUnreachableError(
            f"cannot reach Kafka at {at}: no answer to a connection within {timeout_s:.3g} s "
            f"(a firewall, a wrong address or a host that is down); {check} or raise "
            "ROLLOUT_CONNECT_TIMEOUT_S"
        ) from None
    except OSError as exc:
        sock.close()
        raise KafkaUnreachableError(
            f"cannot reach Kafka at {at}: {exc.strerror or exc}; {check}"
        ) from None
    return sock


def _tls_handshake(
    conn: Connection, broker: _Broker, sock: socket.socket, deadline: float
) -> socket.socket:
    context = ssl_context(conn)
    if context is None:
        raise InvariantError("a TLS protocol without a TLS context")
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        return context.wrap_socket(sock, server_hostname=broker.host)
    except ssl.SSLCertVerificationError as exc:
        raise KafkaTlsError(
            f"TLS handshake with Kafka at {broker.address} failed: the broker's certificate is "
            f"not trusted ({exc.verify_message}); check ROLLOUT_SSL_CAFILE (the CA that signed "
            "it) and that the address is a name the certificate holds"
        ) from None
    except (ssl.SSLError, ConnectionError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise KafkaTlsError(
            f"TLS handshake with Kafka at {broker.address} failed ({reason}): check that this "
            "port is a TLS listener (ROLLOUT_SECURITY_PROTOCOL) and the client certificate "
            "(ROLLOUT_SSL_CERTFILE, ROLLOUT_SSL_KEYFILE) if the broker asks for one"
        ) from None
    except TimeoutError:
        raise KafkaTlsError(
            f"TLS handshake with Kafka at {broker.address} failed: no answer within the "
            "connect timeout; check that this port is a TLS listener (ROLLOUT_SECURITY_PROTOCOL)"
        ) from None


class _Wire:
    """Kafka requests over one socket: size-prefixed frames, request header v1."""

    API_VERSIONS = (18, 0)
    METADATA = (3, 4)
    SASL_HANDSHAKE = (17, 1)
    SASL_AUTHENTICATE = (36, 0)
    ILLEGAL_SASL_STATE = 34
    UNSUPPORTED_SASL_MECHANISM = 33

    def __init__(
        self, sock: socket.socket, broker: _Broker, deadline: float, conn: Connection
    ) -> None:
        self.sock = sock
        self.broker = broker
        self.deadline = deadline
        self.conn = conn
        self.correlation = 0

    # the requests

    def api_versions(self) -> None:
        body = self._request(self.API_VERSIONS, b"", "ApiVersions")
        if len(body) < 2:
            raise self._not_kafka("a short reply to ApiVersions")

    def metadata(self) -> None:
        # topics: an empty array (none), allow_auto_topic_creation: false
        self._request(self.METADATA, struct.pack(">ib", 0, 0), "Metadata")

    def authenticate(self, mechanism: SaslMechanism, username: str, password: str) -> None:
        at = self.broker.address
        body = self._request(self.SASL_HANDSHAKE, _string(mechanism.value), "SaslHandshake")
        error, offered = _handshake_answer(body)
        if error == self.UNSUPPORTED_SASL_MECHANISM:
            listed = ", ".join(offered) or "none"
            raise KafkaAuthenticationError(
                f"Kafka at {at} does not accept SASL {mechanism} (it offers: {listed}); set "
                "ROLLOUT_SASL_MECHANISM to one it offers"
            )
        if error == self.ILLEGAL_SASL_STATE or error != 0:
            raise KafkaAuthenticationError(
                f"Kafka at {at} does not take a SASL login on this listener (error {error}); "
                "check ROLLOUT_SECURITY_PROTOCOL and the port"
            )
        failed = KafkaAuthenticationError(
            f"authentication failed for user {username} with {mechanism} at {at}: check "
            "ROLLOUT_SASL_USERNAME / ROLLOUT_SASL_PASSWORD"
        )
        if mechanism is SaslMechanism.PLAIN:
            self._sasl_step(f"\0{username}\0{password}".encode(), failed)
            return
        scram = _Scram(mechanism, username, password)
        server_first = self._sasl_step(scram.first(), failed)
        try:
            final = scram.final(server_first)
        except ValueError:
            raise failed from None
        server_final = self._sasl_step(final, failed)
        if not scram.verify(server_final):
            raise KafkaAuthenticationError(
                f"Kafka at {at} could not prove it knows the password of {username} "
                f"({mechanism}): the server is not the broker it claims to be"
            )

    def _sasl_step(self, token: bytes, failed: KafkaAuthenticationError) -> bytes:
        try:
            body = self._request(
                self.SASL_AUTHENTICATE, struct.pack(">i", len(token)) + token, "SaslAuthenticate"
            )
        except KafkaUnreachableError:
            raise failed from None  # older brokers close the connection on a failed login
        error, answer = _authenticate_answer(body)
        if error != 0:
            raise failed
        return answer

    # the frames

    def _request(self, api: tuple[int, int], body: bytes, name: str) -> bytes:
        self.correlation += 1
        header = struct.pack(">hhi", api[0], api[1], self.correlation) + _string(CLIENT_ID)
        frame = header + body
        self._settimeout()
        try:
            self.sock.sendall(struct.pack(">i", len(frame)) + frame)
            size = struct.unpack(">i", self._read(4, name))[0]
            if not 4 <= size <= MAX_FRAME:
                raise self._not_kafka(f"it answered {self._peek_text(size)}")
            reply = self._read(size, name)
        except TimeoutError:
            raise self._not_kafka(f"no answer to {name} within the connect timeout") from None
        except (ssl.SSLError, ConnectionError) as exc:
            raise self._not_kafka(f"the connection broke during {name}: {exc}") from None
        (correlation,) = struct.unpack(">i", reply[:4])
        if correlation != self.correlation:
            raise self._not_kafka(f"a reply to {name} that is not Kafka's")
        return reply[4:]

    def _read(self, n: int, name: str) -> bytes:
        chunks = []
        while n > 0:
            self._settimeout()
            chunk = self.sock.recv(min(n, 65536))
            if not chunk:
                raise self._closed(name)
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _settimeout(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)

    def _peek_text(self, size: int) -> str:
        head = struct.pack(">i", size)
        if head[0] in (0x15, 0x16) and head[1] == 0x03 and not self.conn.protocol.uses_tls:
            return "with TLS: set ROLLOUT_SECURITY_PROTOCOL to SSL or SASL_SSL"
        return repr(head.decode("latin-1")) + " and more, not a Kafka frame"

    def _closed(self, name: str) -> KafkaUnreachableError:
        protocol = self.conn.protocol
        if name == "Metadata" and not protocol.uses_sasl:
            return KafkaUnreachableError(
                f"Kafka at {self.broker.address} closed the connection before it would answer "
                f"a {protocol} client: the listener probably expects SASL; set "
                "ROLLOUT_SECURITY_PROTOCOL to SASL_PLAINTEXT or SASL_SSL with "
                "ROLLOUT_SASL_MECHANISM, ROLLOUT_SASL_USERNAME and ROLLOUT_SASL_PASSWORD"
            )
        hint = "" if protocol.uses_tls else " (a TLS listener, perhaps: then set "
        hint += "" if protocol.uses_tls else "ROLLOUT_SECURITY_PROTOCOL to SSL or SASL_SSL)"
        return self._not_kafka(f"it closed the connection at {name}{hint}")

    def _not_kafka(self, what: str) -> KafkaUnreachableError:
        return KafkaUnreachableError(
            f"{self.broker.address} accepts connections but does not answer as a Kafka broker "
            f"({what}); check KAFKA_BOOTSTRAP_SERVERS (the port of a Kafka listener) and "
            "ROLLOUT_SECURITY_PROTOCOL"
        )


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _read_string(body: bytes, at: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", body, at)
    if n < 0:
        return None, at + 2
    return body[at + 2 : at + 2 + n].decode(errors="replace"), at + 2 + n


def _handshake_answer(body: bytes) -> tuple[int, list[str]]:
    """SaslHandshake v1: error_code, [mechanism]."""
    error, count = struct.unpack_from(">hi", body, 0)
    at, offered = 6, []
    for _ in range(max(count, 0)):
        name, at = _read_string(body, at)
        offered.append(name or "")
    return error, offered


def _authenticate_answer(body: bytes) -> tuple[int, bytes]:
    """SaslAuthenticate v0: error_code, error_message, auth_bytes."""
    (error,) = struct.unpack_from(">h", body, 0)
    _, at = _read_string(body, 2)
    (n,) = struct.unpack_from(">i", body, at)
    return error, body[at + 4 : at + 4 + max(n, 0)]


class _Scram:
    """The client side of SCRAM (RFC 5802) without channel binding, as Kafka uses it."""

    def __init__(self, mechanism: SaslMechanism, username: str, password: str) -> None:
        self.hash = hashlib.sha512 if mechanism is SaslMechanism.SCRAM_SHA_512 else hashlib.sha256
        self.password = password.encode()
        name = username.replace("=", "=3D").replace(",", "=2C")
        self.bare = f"n={name},r={base64.b64encode(os.urandom(18)).decode()}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        fields = dict(part.split("=", 1) for part in text.split(","))
        nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
        if not nonce.startswith(self.bare.rsplit("r=", 1)[1]) or iterations > 1_000_000:
            raise ValueError("not a SCRAM answer to this login")
        salted = hashlib.pbkdf2_hmac(self.hash().name, self.password, salt, iterations)
        client_key = self._hmac(salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        message = f"{self.bare},{text},{without_proof}".encode()
        signature = self._hmac(self.hash(client_key).digest(), message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = self._hmac(self._hmac(salted, b"Server Key"), message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        fields = dict(part.split("=", 1) for part in server_final.decode().split(","))
        return hmac.compare_digest(base64.b64decode(fields.get("v", "")), self.server_signature)

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash).digest()


# --- the clients ---------------------------------------------------------------------------------


def _timeout_ms(settings: Settings) -> int:
    return max(1, round(settings.connect_timeout_s * 1000))


def client_options(settings: Settings) -> dict[str, Any]:
    """kafka-python options with the connect timeout as the bootstrap timeout (every client)."""
    return {**settings.kafka_client_options(), "bootstrap_timeout_ms": _timeout_ms(settings)}


def producer(settings: Settings, **options: Any) -> Any:
    """A probed kafka-python KafkaProducer; waits for metadata at most the connect timeout."""
    from kafka import KafkaProducer

    options = {"max_block_ms": _timeout_ms(settings), **options}
    return _made(settings, KafkaProducer, (), options)


def consumer(settings: Settings, *topics: str, **options: Any) -> Any:
    """A probed kafka-python KafkaConsumer of `topics` (none: assign partitions yourself)."""
    from kafka import KafkaConsumer

    return _made(settings, KafkaConsumer, topics, options)


def admin(settings: Settings, **options: Any) -> Any:
    """A probed kafka-python KafkaAdminClient."""
    from kafka.admin import KafkaAdminClient

    return _made(settings, KafkaAdminClient, (), options)


def _made(settings: Settings, cls: Any, args: tuple[str, ...], options: dict[str, Any]) -> Any:
    from kafka.errors import KafkaError

    probe(settings)
    try:
        return cls(*args, **{**client_options(settings), **options})
    except KafkaError as exc:  # the broker went away since the probe, or answers too slowly
        raise KafkaUnreachableError(describe_kafka_error(exc, settings)) from exc


def describe_kafka_error(exc: Exception, settings: Settings | None = None) -> str:
    """One sentence for a kafka-python error that escaped a command after the probe passed."""
    where = f" at {settings.bootstrap_servers}" if settings is not None else ""
    name = type(exc).__name__
    text = str(exc).removeprefix(f"{name}: ")
    if name == "KafkaTimeoutError":
        return (
            f"Kafka{where} did not answer in time ({text}); check that the brokers run and "
            "KAFKA_BOOTSTRAP_SERVERS, or raise ROLLOUT_CONNECT_TIMEOUT_S"
        )
    if "Authorization" in name:
        return f"Kafka{where} refused the request: {name} ({text}); ask for the ACLs it needs"
    return f"Kafka{where} failed the request: {name}: {text}"
