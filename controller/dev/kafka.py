"""The local development broker behind `rollout dev-kafka`.

A single-node Apache Kafka 4.x in KRaft combined mode (broker and controller in one process) on
127.0.0.1, run from the Maven Central jars that deploy/kafka/pom.xml lists, or from an unpacked
distribution named by KAFKA_HOME. The jars are fetched once into the cache and reused after.

The decisions are plain functions of data (`kafka_version_from_pom`, `render_server_properties`,
`java_major_version`, `is_broker_command`); `LocalKafka` is the shell that runs the processes.

Layout under the cache directory::

    kafka/<version>/libs/            the jars (complete once libs.complete holds the pom's digest)
    kafka-data/<port>/server.properties
    kafka-data/<port>/broker.pid     pid of the broker this tool started
    kafka-data/<port>/broker.log     the broker's stdout and stderr (the previous run: .log.1)
    kafka-data/<port>/data/          log.dirs: the topics, formatted on the first start
    kafka-data/secure-<port>/        a secure broker (`--secure`): the same files, and
        tls/ca.pem, tls/server.pem   its CA (clients trust it) and its key and certificate
        tls/ca-key.pem               the CA's key, which signs the client certificates
        tls/clients/<user>.crt|.key  a client certificate (CN=<user>) for each user, for mTLS
        credentials.json             the SCRAM users and their passwords, made at format time

A secure broker serves clients on two listeners, both with a certificate for 127.0.0.1 and
localhost signed by its own CA: SASL_SSL (SCRAM-SHA-512) on its port, and SSL with client
certificates required (mTLS) on its mTLS port (by default the controller port + 1), where the
certificate's `CN=<name>` becomes the principal `User:<name>`. It authorizes both with KRaft's
StandardAuthorizer: `admin` is a super user; `rollout` and the roles' users `controller`,
`serving` and `sre` have no ACLs until someone grants them (`rollout acls --apply`).
Its KRaft controller listener stays PLAINTEXT on 127.0.0.1 (the broker reaches the controller
there as User:ANONYMOUS, a super user for that reason; clients are not meant to use it).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import RolloutError
from controller.settings import Settings

HOST = "127.0.0.1"
MIN_JAVA_MAJOR = 17
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 30.0
JVM_HEAP = "-Xmx512m"
MAVEN_TIMEOUT_S = 900.0
LOG_TAIL_LINES = 40

_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_DEPLOY_SUBDIR = Path("deploy") / "kafka"
_INSTALL_JAVA = "install a JDK or JRE 17 or newer (for example OpenJDK 17)"

# Brokers launched by this interpreter: kept so they are reaped when stopped, instead of
# lingering as zombies, and so the Popen objects are never collected while the broker runs.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class DevKafkaError(RolloutError, RuntimeError):
    """The local broker could not be prepared, started or stopped; the message says what to do.

    `details` holds supporting text (such as the tail of the broker log) shown after the message.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


# --- pure parts ---------------------------------------------------------------------------------


def kafka_version_from_pom(pom_text: str) -> str:
    """The version of the org.apache.kafka:kafka_* dependency, with ${properties} resolved."""
    root = ET.fromstring(pom_text)
    properties = {
        _local_name(p.tag): (p.text or "").strip() for p in root.findall("m:properties/*", _POM_NS)
    }
    for dep in root.findall("m:dependencies/m:dependency", _POM_NS):
        group = dep.findtext("m:groupId", default="", namespaces=_POM_NS).strip()
        artifact = dep.findtext("m:artifactId", default="", namespaces=_POM_NS).strip()
        if group == "org.apache.kafka" and artifact.startswith("kafka_"):
            raw = dep.findtext("m:version", default="", namespaces=_POM_NS).strip()
            version = re.sub(r"\$\{([^}]+)\}", lambda m: properties.get(m.group(1), ""), raw)
            if not version:
                break
            return version
    raise DevKafkaError(
        "The Kafka pom names no org.apache.kafka:kafka_<scala> dependency with a version; "
        "restore deploy/kafka/pom.xml from the repository."
    )


SCRAM_MECHANISM = "SCRAM-SHA-512"
SUPER_USER = "admin"
PLAIN_USER = "rollout"
#: the users of the roles in controller/security/acls.py, one SCRAM login and certificate each
ROLE_USERS = ("controller", "serving", "sre")
USERS = (SUPER_USER, PLAIN_USER, *ROLE_USERS)
#: CN=<name>,... -> User:<name> on the mTLS listener
PRINCIPAL_MAPPING_RULES = "RULE:^CN=([^,]+).*$/$1/,DEFAULT"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True)
class SecureAccess:
    """How clients reach a secure broker: SASL_SSL with SCRAM-SHA-512, trusting `ca_file`.

    `users` maps each SCRAM user to its password; `admin` is a super user, the others have no
    ACLs until they are granted. `mtls_bootstrap` is the listener that requires a client
    certificate; `clients_dir` holds one for each user (`client_files`)."""

    bootstrap: str
    ca_file: Path
    users: dict[str, str]
    mechanism: str = SCRAM_MECHANISM
    mtls_bootstrap: str = ""
    clients_dir: Path | None = None

    def client_files(self, user: str) -> tuple[Path, Path]:
        """The certificate (CN=<user>) and key with which `user` connects over mTLS."""
        if self.clients_dir is None or user not in self.users:
            raise DevKafkaError(f"No client certificate for {user!r} on {self.bootstrap}.")
        return self.clients_dir / f"{user}.crt", self.clients_dir / f"{user}.key"

    def mtls_environment(self, user: str) -> dict[str, str]:
        """The ROLLOUT_* variables that connect as `user` with its client certificate."""
        certfile, keyfile = self.client_files(user)
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.mtls_bootstrap,
            "ROLLOUT_SECURITY_PROTOCOL": "SSL",
            "ROLLOUT_SSL_CAFILE": str(self.ca_file),
            "ROLLOUT_SSL_CERTFILE": str(certfile),
            "ROLLOUT_SSL_KEYFILE": str(keyfile),
        }

    def mtls_kafka_python_options(self, user: str) -> dict[str, Any]:
        certfile, keyfile = self.client_files(user)
        return {
            "bootstrap_servers": self.mtls_bootstrap,
            "security_protocol": "SSL",
            "ssl_cafile": str(self.ca_file),
            "ssl_certfile": str(certfile),
            "ssl_keyfile": str(keyfile),
        }

    def environment(self, user: str = SUPER_USER, password: str | None = None) -> dict[str, str]:
        """The ROLLOUT_* variables that connect as `user` (with another password, if given)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "ROLLOUT_SECURITY_PROTOCOL": "SASL_SSL",
            "ROLLOUT_SASL_MECHANISM": self.mechanism,
            "ROLLOUT_SASL_USERNAME": user,
            "ROLLOUT_SASL_PASSWORD": self.users[user] if password is None else password,
            "ROLLOUT_SSL_CAFILE": str(self.ca_file),
        }

    def kafka_python_options(self, user: str = SUPER_USER) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": user,
            "sasl_plain_password": self.users[user],
            "ssl_cafile": str(self.ca_file),
        }


@dataclass(frozen=True)
class SecureListener:
    """What server.properties needs of a secure broker: its TLS files and the super user's
    password (the broker logs in to itself with it)."""

    server_pem: Path
    ca_file: Path
    admin_password: str
    mtls_port: int | None = None


def render_server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dir: Path,
    secure: SecureListener | None = None,
) -> str:
    """server.properties of a single node that is both broker and KRaft controller; with
    `secure`, its client listener is SASL_SSL (SCRAM) and requests are authorized."""
    name = "SASL_SSL" if secure is not None else "PLAINTEXT"
    listeners = [f"{name}://{host}:{port}"]
    protocols = ["CONTROLLER:PLAINTEXT", f"{name}:{name}"]
    if secure is not None and secure.mtls_port is not None:
        listeners.append(f"MTLS://{host}:{secure.mtls_port}")
        protocols.append("MTLS:SSL")
    lines = [
        "# Written by `rollout dev-kafka start`; rewritten on every start.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers={host}:{controller_port}",
        f"listeners={','.join(listeners)},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners={','.join(listeners)}",
        "controller.listener.names=CONTROLLER",
        f"inter.broker.listener.name={name}",
        f"listener.security.protocol.map={','.join(protocols)}",
    ]
    if secure is not None and secure.mtls_port is not None:
        lines += [
            "listener.name.mtls.ssl.client.auth=required",
            f"listener.name.mtls.ssl.principal.mapping.rules={PRINCIPAL_MAPPING_RULES}",
        ]
    if secure is not None:
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{SUPER_USER}" password="{secure.admin_password}";'
        )
        lines += [
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={jaas}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={secure.server_pem}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={secure.ca_file}",
            f"authorizer.class.name={STANDARD_AUTHORIZER}",
            # the broker reaches its controller on the PLAINTEXT controller listener
            f"super.users=User:{SUPER_USER};User:ANONYMOUS",
        ]
    lines += [
        f"log.dirs={log_dir}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # the project creates its topics in code; a typo must not create a topic
        "auto.create.topics.enable=false",
        # changelog topics are compacted: the cleaner stays on
        "log.cleaner.enable=true",
    ]
    return "\n".join(lines) + "\n"


def java_major_version(version_output: str) -> int | None:
    """The major version in `java -version` output: 'version "17.0.15"' -> 17, "1.8.0" -> 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def is_broker_command(argv: Sequence[str], properties_file: Path) -> bool:
    """True when argv is `java ... kafka.Kafka <properties_file>`: the broker this tool started."""
    if not argv or not Path(argv[0]).name.startswith("java"):
        return False
    return "kafka.Kafka" in argv and str(properties_file) in argv


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# --- the toolchain: java, maven, the jars --------------------------------------------------------


def find_deploy_dir(start: Path | None = None) -> Path:
    """deploy/kafka of the source tree this module belongs to (installs here are editable)."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        candidate = parent / _DEPLOY_SUBDIR
        if (candidate / "pom.xml").is_file():
            return candidate
    raise DevKafkaError(
        f"No {_DEPLOY_SUBDIR / 'pom.xml'} was found above {here.parent}; run rollout from a "
        "source checkout (pip install -e .) or set KAFKA_HOME to an unpacked Apache Kafka 4.x "
        "distribution."
    )


def require_java() -> str:
    """Path of a Java 17+ executable (JAVA_HOME first, then PATH), or a DevKafkaError."""
    java_home = os.environ.get("JAVA_HOME")
    java: str | None = None
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        java = str(Path(java_home) / "bin" / "java")
    else:
        java = shutil.which("java")
    if java is None:
        raise DevKafkaError(
            f"Java {MIN_JAVA_MAJOR} or newer is needed to run the local Kafka broker but no "
            f"`java` was found on PATH or in JAVA_HOME: {_INSTALL_JAVA}."
        )
    try:
        probe = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevKafkaError(
            f"Java {MIN_JAVA_MAJOR} or newer is needed to run the local Kafka broker but "
            f"`{java} -version` failed ({exc}): {_INSTALL_JAVA}."
        ) from exc
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < MIN_JAVA_MAJOR:
        found = "an unknown version" if major is None else f"Java {major}"
        raise DevKafkaError(
            f"Java {MIN_JAVA_MAJOR} or newer is needed to run the local Kafka broker but "
            f"{java} is {found}: {_INSTALL_JAVA} and put it first on PATH or in JAVA_HOME."
        )
    return java


@dataclass(frozen=True)
class Distribution:
    """Where the broker's code comes from: a Java classpath and a log4j2 configuration."""

    classpath: str
    log4j_config: Path
    origin: str  # "maven <libs dir>" or "KAFKA_HOME <dir>", for messages


def resolve_distribution(cache_dir: Path, kafka_home: Path | None = None) -> Distribution:
    """KAFKA_HOME when given, else the Maven jars in the cache (fetched on first use)."""
    if kafka_home is not None:
        libs = kafka_home / "libs"
        if not libs.is_dir():
            raise DevKafkaError(
                f"KAFKA_HOME is {kafka_home} but it has no libs directory; point it at an "
                "unpacked Apache Kafka 4.x distribution or unset it to use the Maven jars."
            )
        own_config = kafka_home / "config" / "log4j2.yaml"
        log4j = own_config if own_config.is_file() else find_deploy_dir() / "log4j2.yaml"
        return Distribution(f"{libs}/*", log4j, f"KAFKA_HOME {kafka_home}")
    deploy = find_deploy_dir()
    libs = fetch_libs(cache_dir, deploy / "pom.xml")
    return Distribution(f"{libs}/*", deploy / "log4j2.yaml", f"maven {libs}")


def fetch_libs(cache_dir: Path, pom: Path) -> Path:
    """cache_dir/kafka/<version>/libs holding the pom's runtime jars; runs Maven only once.

    The directory counts as complete when libs.complete next to it holds the pom's digest, so an
    edited pom (another log4j, say) fetches again, and an interrupted copy is never used.
    """
    pom_bytes = pom.read_bytes()
    version = kafka_version_from_pom(pom_bytes.decode("utf-8"))
    root = cache_dir / "kafka" / version
    libs = root / "libs"
    marker = root / "libs.complete"
    digest = hashlib.sha256(pom_bytes).hexdigest()

    def complete() -> bool:
        return libs.is_dir() and marker.is_file() and marker.read_text().strip() == digest

    if complete():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if complete():  # another process fetched while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise DevKafkaError(
                f"Maven is needed once to fetch the Kafka {version} jars into {libs} but no "
                "`mvn` was found on PATH: install Maven 3.6 or newer, or set KAFKA_HOME to an "
                "unpacked Apache Kafka 4.x distribution."
            )
        partial = root / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}", "-DincludeScope=runtime",
        ]  # fmt: skip
        try:
            run = subprocess.run(
                command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DevKafkaError(
                f"Maven did not finish fetching the Kafka {version} jars within "
                f"{MAVEN_TIMEOUT_S:.0f} s; check the network and Maven's settings, then retry."
            ) from exc
        if run.returncode != 0 or not any(partial.glob("kafka_*.jar")):
            raise DevKafkaError(
                f"Maven could not fetch the Kafka {version} jars (exit {run.returncode}); "
                "check the network and Maven's settings, then retry.",
                details=log_tail(run.stdout + run.stderr),
            )
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        marker.write_text(digest + "\n")
    return libs


# --- the broker process -------------------------------------------------------------------------


class State(enum.Enum):
    RUNNING = "running"  # our broker process is alive and its port answers
    STARTING = "starting"  # our broker process is alive but its port does not answer yet
    STOPPED = "stopped"  # no pid file
    STALE = "stale"  # a pid file whose process is gone, or is no longer our broker

    def is_alive(self) -> bool:
        return self in (State.RUNNING, State.STARTING)


@dataclass(frozen=True)
class Status:
    state: State
    bootstrap: str
    pid: int | None
    log_file: Path
    reason: str

    @property
    def running(self) -> bool:
        return self.state.is_alive()


class LocalKafka:
    """One local broker, identified by its client port; its files live under cache_dir.

    `start` is idempotent: a broker already started by this tool on this port is reused.
    `stop` only signals the process named by the pid file, and only if that process is still
    `java ... kafka.Kafka <this broker's server.properties>`.
    """

    def __init__(
        self,
        port: int,
        *,
        cache_dir: Path,
        controller_port: int | None = None,
        kafka_home: Path | None = None,
        host: str = HOST,
        secure: bool = False,
        mtls_port: int | None = None,
    ) -> None:
        self.host = host
        self.secure = secure
        self.port = port
        self.controller_port = controller_port if controller_port is not None else port + 1
        #: a secure broker's mTLS listener (SSL, client certificates required)
        self.mtls_port = mtls_port if mtls_port is not None else self.controller_port + 1
        if self.controller_port == self.port or not 0 < self.controller_port < 65536:
            raise DevKafkaError(
                f"The KRaft controller port {self.controller_port} cannot go with the broker port "
                f"{port}; set ROLLOUT_KAFKA_CONTROLLER_PORT to another free port."
            )
        self.cache_dir = cache_dir.expanduser().resolve()
        self.kafka_home = kafka_home.expanduser().resolve() if kafka_home else None
        self.data_dir = self.cache_dir / "kafka-data" / (f"secure-{port}" if secure else str(port))
        self.tls_dir = self.data_dir / "tls"
        self.credentials_file = self.data_dir / "credentials.json"
        self.properties_file = self.data_dir / "server.properties"
        self.pid_file = self.data_dir / "broker.pid"
        self.log_file = self.data_dir / "broker.log"
        self.log_dir = self.data_dir / "data"

    @classmethod
    def from_settings(
        cls, settings: Settings, port: int | None = None, *, secure: bool = False
    ) -> LocalKafka:
        """The broker of the settings (ROLLOUT_KAFKA_PORT, ...); KAFKA_HOME from the environment.

        An explicit `port` wins over the settings, and then the controller port follows it
        (port + 1) unless ROLLOUT_KAFKA_CONTROLLER_PORT is set. A secure broker runs beside
        the plain one: on ROLLOUT_KAFKA_PORT + 2 by default, its controller on its port + 1.
        """
        kafka_home = os.environ.get("KAFKA_HOME")
        if secure:
            chosen = port if port is not None else settings.kafka_port + 2
            controller_port = chosen + 1
        else:
            chosen = port if port is not None else settings.kafka_port
            controller_port = settings.kafka_controller_port
        return cls(
            chosen,
            cache_dir=settings.cache_dir,
            controller_port=controller_port,
            kafka_home=Path(kafka_home) if kafka_home else None,
            secure=secure,
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    # -- queries

    def status(self) -> Status:
        pid = self._read_pid()
        if pid is None:
            reason = "no broker started by `rollout dev-kafka` on this port"
            if _port_answers(self.host, self.port):
                reason += "; another process listens on it"
            return Status(State.STOPPED, self.bootstrap, None, self.log_file, reason)
        if not self._owns(pid):
            reason = f"stale pid file: process {pid} is gone or is not this broker"
            return Status(State.STALE, self.bootstrap, pid, self.log_file, reason)
        if _port_answers(self.host, self.port):
            return Status(State.RUNNING, self.bootstrap, pid, self.log_file, "port answers")
        reason = "the process runs but its port does not answer yet"
        return Status(State.STARTING, self.bootstrap, pid, self.log_file, reason)

    def is_running(self) -> bool:
        return self.status().running

    def access(self) -> SecureAccess:
        """How clients connect to this secure broker (its files exist once it was started)."""
        if not self.secure:
            raise DevKafkaError(f"The broker on {self.bootstrap} is not a secure one.")
        try:
            users = json.loads(self.credentials_file.read_text())
        except (OSError, ValueError) as exc:
            raise DevKafkaError(
                f"No credentials for the secure broker on {self.bootstrap} ({exc}); start it "
                "with `rollout dev-kafka start --secure`."
            ) from exc
        return SecureAccess(
            self.bootstrap,
            self.tls_dir / "ca.pem",
            dict(users),
            mtls_bootstrap=f"{self.host}:{self.mtls_port}",
            clients_dir=self.tls_dir / "clients",
        )

    # -- commands

    def start(self, timeout: float = DEFAULT_START_TIMEOUT_S) -> str:
        """Start the broker (or find it running) and wait until it serves clients.

        `timeout` bounds the wait for the broker once launched; fetching the jars on the first
        start comes before it. Returns the bootstrap address.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.data_dir / "lock"):
            current = self.status()
            if current.running and current.pid is not None:
                self._wait_until_ready(current.pid, timeout)
                return self.bootstrap
            self.pid_file.unlink(missing_ok=True)
            self._require_free_ports()
            java = require_java()
            dist = resolve_distribution(self.cache_dir, self.kafka_home)
            self.properties_file.write_text(
                render_server_properties(
                    host=self.host,
                    port=self.port,
                    controller_port=self.controller_port,
                    log_dir=self.log_dir,
                    secure=self._secure_listener(),
                )
            )
            self._format_storage(java, dist)
            pid = self._launch(java, dist)
            try:
                self._wait_until_ready(pid, timeout)
            except BaseException:
                self._terminate(pid, DEFAULT_STOP_TIMEOUT_S)
                self.pid_file.unlink(missing_ok=True)
                raise
        return self.bootstrap

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """End the broker this tool started: SIGTERM, then SIGKILL after `timeout` seconds.

        Returns False (and only cleans a stale pid file) when no such broker runs.
        """
        if not self.data_dir.is_dir():
            return False
        with _locked(self.data_dir / "lock"):
            pid = self._read_pid()
            if pid is None:
                return False
            if not self._owns(pid):
                self.pid_file.unlink(missing_ok=True)
                return False
            self._terminate(pid, timeout)
            self.pid_file.unlink(missing_ok=True)
        return True

    @contextlib.contextmanager
    def shared(self, timeout: float = DEFAULT_START_TIMEOUT_S) -> Iterator[str]:
        """Use the broker from several processes at once, such as concurrent test sessions.

        Starts the broker unless it runs, and yields its bootstrap address. Each user holds a
        lease (users/<pid>-<random>) while inside; the last one to leave stops the broker, but
        only if a `shared` user started it: one started by `rollout dev-kafka start` stays up.
        """
        users = self.data_dir / "users"
        started_shared = self.data_dir / "started-shared"
        users.mkdir(parents=True, exist_ok=True)
        lease = users / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with _locked(self.data_dir / "users.lock"):
            if not _live_leases(users):  # a marker left by a crashed user is no evidence
                started_shared.unlink(missing_ok=True)
            running = self.is_running()
            bootstrap = self.start(timeout)
            if not running:
                started_shared.touch()
            lease.touch()
        try:
            yield bootstrap
        finally:
            with _locked(self.data_dir / "users.lock"):
                lease.unlink(missing_ok=True)
                if not _live_leases(users) and started_shared.exists():
                    self.stop()
                    started_shared.unlink(missing_ok=True)

    # -- the shell

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _owns(self, pid: int) -> bool:
        """Whether `pid` is a live process of this broker."""
        child = _CHILDREN.get(pid)
        if child is not None:
            # Launched by this interpreter: poll() also reaps it once it exits. Its command line
            # is no evidence here, as it reads empty while the exec is still under way.
            if child.poll() is None:
                return True
            del _CHILDREN[pid]
            return False
        argv = _command_line(pid)
        return argv is not None and is_broker_command(argv, self.properties_file)

    def _require_free_ports(self) -> None:
        ports = [("broker", self.port), ("KRaft controller", self.controller_port)]
        if self.secure:
            ports.append(("mTLS listener", self.mtls_port))
        for name, port in ports:
            if not _port_free(self.host, port):
                raise DevKafkaError(
                    f"Port {port} on {self.host} (the {name} port) is already in use by "
                    "another process, not by a broker `rollout dev-kafka` started; stop that "
                    "process or choose another port with --port or ROLLOUT_KAFKA_PORT."
                )

    def _secure_listener(self) -> SecureListener | None:
        """The TLS files and SCRAM passwords of a secure broker, made on its first start (the
        passwords go into the metadata when the storage is formatted, so they stay with it)."""
        if not self.secure:
            return None
        from controller.dev.tls import client_certificate, ensure_certificates

        tls = ensure_certificates(self.tls_dir, (self.host, "localhost"))
        formatted = (self.log_dir / "meta.properties").is_file()
        if not formatted or set(USERS) - set(self._stored_users()):
            shutil.rmtree(self.log_dir, ignore_errors=True)  # users are added at format time
            users = {user: secrets.token_hex(16) for user in USERS}
            self.credentials_file.write_text(json.dumps(users, indent=2) + "\n")
            self.credentials_file.chmod(0o600)
        access = self.access()
        for user in USERS:
            client_certificate(tls, user, self.tls_dir / "clients")
        return SecureListener(tls.server_pem, tls.ca_file, access.users[SUPER_USER], self.mtls_port)

    def _stored_users(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.credentials_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _format_storage(self, java: str, dist: Distribution) -> None:
        if (self.log_dir / "meta.properties").is_file():
            return
        tool = [java, f"-Dlog4j2.configurationFile={dist.log4j_config}"]
        tool += ["-cp", dist.classpath, "kafka.tools.StorageTool"]
        generated = _run_java_tool([*tool, "random-uuid"], "create a cluster id")
        cluster_id = generated.stdout.strip().splitlines()[-1].strip()
        scram: list[str] = []
        if self.secure:
            for user, password in self.access().users.items():
                scram += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        _run_java_tool(
            [
                *tool, "format", "--standalone", "-t", cluster_id,
                "-c", str(self.properties_file), *scram,
            ],
            f"format the storage in {self.log_dir}",
        )  # fmt: skip

    def _launch(self, java: str, dist: Distribution) -> int:
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        command = [
            java,
            JVM_HEAP,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={dist.log4j_config}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp",
            dist.classpath,
            "kafka.Kafka",
            str(self.properties_file),
        ]
        with self.log_file.open("ab") as log:
            log.write(f"# rollout dev-kafka: {dist.origin}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait_until_ready(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self._owns(pid):
                raise DevKafkaError(
                    f"The Kafka broker exited while starting; see {self.log_file}.",
                    details=self._log_tail(),
                )
            options = self.access().kafka_python_options() if self.secure else {}
            if _port_answers(self.host, self.port) and _kafka_answers(self.bootstrap, options):
                return
            if time.monotonic() >= deadline:
                raise DevKafkaError(
                    f"The Kafka broker did not accept clients on {self.bootstrap} within "
                    f"{timeout:.0f} s; see {self.log_file}.",
                    details=self._log_tail(),
                )
            time.sleep(0.25)

    def _terminate(self, pid: int, timeout: float) -> None:
        for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if not self._owns(pid):
                    return
                time.sleep(0.1)
        raise DevKafkaError(f"Process {pid} survived SIGKILL; check it with `ps -p {pid}`.")

    def _log_tail(self) -> str:
        try:
            return log_tail(self.log_file.read_text(errors="replace"))
        except FileNotFoundError:
            return ""


def _run_java_tool(command: list[str], purpose: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if run.returncode != 0:
        raise DevKafkaError(
            f"Kafka's StorageTool could not {purpose} (exit {run.returncode}).",
            details=log_tail(run.stdout + run.stderr),
        )
    return run


def _command_line(pid: int) -> list[str] | None:
    """argv of a live process, or None when it is gone (a zombie has an empty command line)."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        return argv or None
    # no /proc (macOS): ps gives one string; arguments with spaces do not survive the split
    run = subprocess.run(
        ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        return None
    return run.stdout.split() or None


def _live_leases(users: Path) -> list[Path]:
    """The leases of processes still alive; those of processes gone (killed, crashed) go."""
    live = []
    for lease in users.iterdir():
        try:
            os.kill(int(lease.name.split("-", 1)[0]), 0)
        except (ValueError, ProcessLookupError):
            lease.unlink(missing_ok=True)
            continue
        except PermissionError:  # alive, but another user's process
            pass
        live.append(lease)
    return live


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the JVM does, so a port in TIME_WAIT after the last broker counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _kafka_answers(bootstrap: str, options: dict[str, Any] | None = None) -> bool:
    """A real Kafka round trip: bootstrap, then list the topics (`options`: how to log in)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            **{"bootstrap_servers": bootstrap, **(options or {})},
            bootstrap_timeout_ms=2000,
            request_timeout_ms=5000,
        )
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two concurrent `start`s launch one broker."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
