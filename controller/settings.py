"""One settings object, read from the environment (and nothing else).

Every variable is prefixed ROLLOUT_ except the bootstrap servers, which also answer to the
conventional KAFKA_BOOTSTRAP_SERVERS that tests and tooling already use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rollout-controller"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ROLLOUT_", extra="ignore", frozen=True, populate_by_name=True
    )

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "ROLLOUT_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list of Kafka brokers.",
    )
    topic_prefix: str = Field(default="rollout.", description="Prefix of every topic name.")
    topic_partitions: int = Field(default=6, ge=1, description="Partitions of the keyed topics.")
    replication_factor: int = Field(default=1, ge=1)
    consumer_group: str = Field(default="rollout-controller")
    security_protocol: str = Field(default="PLAINTEXT")
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    policy_file: Path | None = Field(default=None, description="Rollout policy (YAML or JSON).")
    tick_interval_s: float = Field(default=1.0, gt=0)
    # Group membership of the worker's consumers (the rollout agent's and the prediction
    # lane's): a worker that dies without leaving the group (kill -9, a lost node) holds its
    # partitions until the session times out; then the group rebalances and the others
    # recover its rollouts from the changelog. Kafka's defaults (45 s; Faust's 60 s) stall
    # those rollouts that long. The broker bounds the session by group.min.session.timeout.ms
    # (6 s by default).
    session_timeout_s: float = Field(
        default=6.0, ge=1.0, description="Consumer group session timeout (failover time)."
    )
    heartbeat_interval_s: float = Field(
        default=1.0, gt=0, description="Heartbeats to the group coordinator; < session / 3."
    )
    rebalance_timeout_s: float = Field(
        default=10.0, ge=1.0, description="How long a rebalance waits for members to rejoin."
    )
    # How long a command waits for the brokers before it gives up with one sentence that says
    # why (controller.kafka_clients): the pre-flight probe, kafka-python's bootstrap and a
    # producer's wait for metadata are each bounded by it.
    connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a command waits for the Kafka brokers before it fails.",
    )
    native_lane: bool = Field(
        default=True,
        description="Decode and fold prediction records with the compiled lane when it is built.",
    )

    # the local development broker (`rollout dev-kafka`)
    data_dir: Path | None = Field(
        default=None,
        description="Where the worker keeps its `<group>-data` folder (default: the working "
        "directory); a writable volume in a container.",
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the worker's /metrics, /healthz and /readyz (0: any free port, "
        "logged as metrics.serving).",
    )
    metrics_host: str = Field(
        default="0.0.0.0", description="Address the metrics and health port listens on."
    )
    health_stall_s: float = Field(
        default=30.0,
        gt=0,
        description="/healthz fails when the worker's event loop has not turned for this long.",
    )
    label_join: bool = Field(
        default=False,
        description="Join labels to their predictions in this worker (the quality rule's input).",
    )
    label_horizon_s: float = Field(
        default=7 * 86400.0, gt=0, description="How long a prediction waits for its label."
    )
    # signatures (controller/security/signing.py, docs/security.md)
    identities_file: Path | None = Field(
        default=None,
        description="The people's and CI systems' public keys and groups: the worker then "
        "accepts only signed, authorized control events.",
    )
    command_key_file: Path | None = Field(
        default=None, description="The controller's private key: the worker signs every command."
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="The key the CLI signs control events with (approve, deny, pause, ...).",
    )
    controller_keys_file: Path | None = Field(
        default=None,
        description="The controller's public keys: a CommandListener then applies only commands "
        "signed with one of them.",
    )
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int | None = Field(
        default=None, description="KRaft controller port; default: kafka_port + 1."
    )
    cache_dir: Path = Field(default_factory=_default_cache_dir)

    @model_validator(mode="after")
    def _heartbeats_fit_the_session(self) -> Settings:
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ValueError(
                f"ROLLOUT_HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s:g}) must be at most "
                f"a third of ROLLOUT_SESSION_TIMEOUT_S ({self.session_timeout_s:g}): raise the "
                "session timeout or lower the heartbeat interval"
            )
        return self

    def kafka_client_options(self) -> dict[str, Any]:
        """Connection options for kafka-python producers, consumers and admin clients; the
        translation lives in controller.kafka_options, with aiokafka's and Faust's."""
        from controller.kafka_options import kafka_python_options

        return kafka_python_options(self)


class SettingsError(ValueError):
    """The environment's settings are invalid: one sentence per problem, naming the variable
    to change (what the CLI prints instead of a traceback)."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # pydantic-settings accepts field kwargs
    except ValidationError as exc:
        raise SettingsError(describe_settings_errors(exc)) from exc


def describe_settings_errors(exc: ValidationError) -> str:
    """'ROLLOUT_TICK_INTERVAL_S: Input should be greater than 0 (got "0")', one per problem."""
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            variable = "ROLLOUT_" + str(error["loc"][0]).upper()
            problems.append(f"{variable}: {message} (got {error.get('input')!r})")
        else:
            problems.append(message)
    return "invalid settings: " + "; ".join(problems)
