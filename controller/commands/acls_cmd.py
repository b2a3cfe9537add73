"""`rollout acls`: the Kafka ACLs of the controller's roles, printed or applied."""

from __future__ import annotations

from typing import Any

import click

from controller.settings import load_settings


def _principals(given: tuple[str, ...]) -> dict[Any, str]:
    from controller.security.acls import Role, default_principals

    chosen = default_principals()
    for item in given:
        role, sep, principal = item.partition("=")
        try:
            key = Role(role.strip())
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise click.BadParameter(
                f"unknown role {role!r} in {item!r}; known: {known}", param_hint="--principal"
            ) from None
        if not sep or not principal.startswith("User:") or principal == "User:":
            raise click.BadParameter(f"{item!r} is not role=User:name", param_hint="--principal")
        chosen[key] = principal
    return chosen


def _kafka_python(binding: Any) -> Any:
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    pattern = ResourcePattern(
        ResourceType[binding.resource.value.upper()],
        binding.name,
        ACLResourcePatternType[binding.pattern.value.upper()],
    )
    operation = ACLOperation[binding.operation.name]
    return ACL(binding.principal, "*", operation, ACLPermissionType.ALLOW, pattern)


@click.command("acls")
@click.option("--prefix", "topic_prefix", help="Topic prefix (default: ROLLOUT_TOPIC_PREFIX).")
@click.option(
    "--group", "consumer_group", help="The worker's group (default: ROLLOUT_CONSUMER_GROUP)."
)
@click.option("--notify-group", default=None, help="The notifier's consumer group.")
@click.option(
    "--principal",
    "principals",
    multiple=True,
    metavar="ROLE=User:NAME",
    help="The principal of a role (controller, serving, sre); default User:<role>. Repeatable.",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "kafka-acls"]),
    default="table",
    show_default=True,
)
@click.option("--apply", is_flag=True, help="Create the ACLs on the brokers (as an admin).")
def acls_cmd(
    topic_prefix: str | None,
    consumer_group: str | None,
    notify_group: str | None,
    principals: tuple[str, ...],
    output: str,
    apply: bool,
) -> None:
    """The ACLs each role needs: print them as a table or kafka-acls.sh lines, or --apply them.

    See docs/security.md."""
    from controller.security.acls import AclScope, bindings, kafka_acls_command, table

    overrides = {
        k: v
        for k, v in (("topic_prefix", topic_prefix), ("consumer_group", consumer_group))
        if v is not None
    }
    settings = load_settings(**overrides)
    extra = {"notify_group": notify_group} if notify_group else {}
    rows = bindings(AclScope.of(settings, **extra), _principals(principals))
    if output == "kafka-acls":
        for binding in rows:
            click.echo(kafka_acls_command(binding, settings.bootstrap_servers))
    else:
        lines = [("role", "principal", "operations", "resource", "pattern", "name"), *table(rows)]
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
        for line in lines:
            click.echo(
                "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1]
            )
    if apply:
        _apply(settings, rows)


def _apply(settings: Any, rows: list[Any]) -> None:
    from kafka.errors import KafkaError

    from controller import kafka_clients

    try:
        admin = kafka_clients.admin(settings, client_id="rollout-acls")
    except KafkaError as exc:
        raise click.ClickException(kafka_clients.describe_kafka_error(exc, settings)) from exc
    try:
        result = admin.create_acls([_kafka_python(b) for b in rows])
    except KafkaError as exc:
        raise click.ClickException(
            f"cannot create the ACLs: {kafka_clients.describe_kafka_error(exc, settings)}"
        ) from exc
    finally:
        admin.close()
    failed = result.get("failed", [])
    if failed:
        first_acl, first_error = failed[0]
        raise click.ClickException(
            f"{len(failed)} of {len(rows)} ACLs were refused, the first "
            f"({first_acl.principal} {first_acl.operation.name} "
            f"{first_acl.resource_pattern.resource_name}) with {first_error}: connect as a "
            "principal allowed to alter the cluster's ACLs (a super user)"
        )
    click.echo(f"applied {len(result.get('succeeded', []))} ACLs")
