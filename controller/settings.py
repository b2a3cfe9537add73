"""One settings object, read from the environment (and nothing else).

Every variable is prefixed ROLLOUT_ except the bootstrap servers, which also answer to the
conventional KAFKA_BOOTSTRAP_SERVERS that tests and tooling already use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field
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
    native_lane: bool = Field(
        default=True,
        description="Decode and fold prediction records with the compiled lane when it is built.",
    )

    # the local development broker (`rollout dev-kafka`)
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int | None = Field(
        default=None, description="KRaft controller port; default: kafka_port + 1."
    )
    cache_dir: Path = Field(default_factory=_default_cache_dir)

    def kafka_client_options(self) -> dict[str, Any]:
        """Connection options for kafka-python producers, consumers and admin clients; the
        translation lives in controller.kafka_options, with aiokafka's and Faust's."""
        from controller.kafka_options import kafka_python_options

        return kafka_python_options(self)


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]  # pydantic-settings accepts field kwargs
