"""The ACLs of the roles, derived from the topic prefix and the consumer group."""

from __future__ import annotations

from controller.security.acls import (
    AclBinding,
    AclScope,
    Operation,
    Pattern,
    Resource,
    Role,
    bindings,
    kafka_acls_command,
)

SCOPE = AclScope(topic_prefix="p.", consumer_group="g")


def writers(topic: str) -> set[Role]:
    return {
        b.role
        for b in bindings(SCOPE)
        if b.resource is Resource.TOPIC and b.name == topic and b.operation is Operation.WRITE
    }


def test_only_the_controller_writes_commands_decisions_and_alerts() -> None:
    for topic in ("p.commands", "p.decisions", "p.alerts"):
        assert {Role.CONTROLLER} == writers(topic)


def test_only_serving_writes_predictions() -> None:
    assert {Role.SERVING} == writers("p.predictions")


def test_the_worker_gets_its_groups_and_faust_topics() -> None:
    groups = {b.name for b in bindings(SCOPE) if b.resource is Resource.GROUP}
    assert {"g", "g.predictions", "g.labels", "rollout-notify", "rollout-router."} == groups
    faust = {
        b.operation
        for b in bindings(SCOPE)
        if b.name == "g-" and b.pattern is Pattern.PREFIXED and b.role is Role.CONTROLLER
    }
    assert {Operation.CREATE, Operation.READ, Operation.WRITE} == faust


def test_a_role_can_be_another_principal() -> None:
    principals = {role: f"User:{role}-prod" for role in Role}
    assert {b.principal for b in bindings(SCOPE, principals)} == set(principals.values())


def test_a_binding_renders_as_a_kafka_acls_line() -> None:
    binding = AclBinding(
        Role.SRE, "User:sre", Resource.TOPIC, "p.deployments", Pattern.LITERAL, Operation.WRITE
    )
    assert (
        "kafka-acls.sh --bootstrap-server b:9093 --command-config admin.properties --add "
        "--allow-principal User:sre --operation Write --topic 'p.deployments' "
        "--resource-pattern-type literal"
    ) == kafka_acls_command(binding, "b:9093")
