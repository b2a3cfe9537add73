"""`rollout topics create|list`."""

from __future__ import annotations

import click

from controller.settings import load_settings


@click.group("topics")
def topics_group() -> None:
    """The controller's Kafka topics."""


@topics_group.command("create")
@click.option("--bootstrap-servers", envvar="KAFKA_BOOTSTRAP_SERVERS", help="host:port,...")
def create_cmd(bootstrap_servers: str | None) -> None:
    """Create every missing topic with its partitions and cleanup policy (idempotent)."""
    from controller.topics import create_topics

    settings = load_settings(
        **({"bootstrap_servers": bootstrap_servers} if bootstrap_servers else {})
    )
    for name, what in create_topics(settings).items():
        click.echo(f"{what:8} {name}")


@topics_group.command("list")
def list_cmd() -> None:
    """Show the topics this configuration uses."""
    from controller.topics import topic_specs

    for spec in topic_specs(load_settings()):
        policy = spec.config.get("cleanup.policy", "delete")
        click.echo(
            f"{spec.name:32} partitions={spec.partitions} cleanup={policy:14} {spec.purpose}"
        )
