"""The Kafka ACLs of the controller's roles, derived from the topic and group names (pure).

Three roles talk to the brokers, each as its own principal:

- **controller**: the worker (a Faust app with two aiokafka lanes) and the notifier. It alone
  writes commands, decisions, alerts and dead letters; it reads the inputs; it owns the
  consumer groups `<group>`, `<group>.predictions`, `<group>.labels` and the notifier's, and the
  topics Faust creates for itself: `<group>-<table>-changelog` and `<group>-__assignor-__leader`
  (a prefixed grant on `<group>-`), plus the notifier's compacted state topic, which it creates.
- **serving**: model servers and routers. They write predictions, labels and metrics, and
  acknowledge commands on the deployments topic; they read commands in the groups
  `rollout-router.<instance>` (a prefixed grant).
- **sre**: people and their tools (`rollout deploy / approve / pause / abort`, `status`,
  `watch`, `alerts`, `dead-letters`). They write the deployments topic and read what the
  controller decided; the CLI reads without a consumer group.

Nothing here creates the project's own topics: an administrator does, with
`rollout topics create`, before the roles start. A grant is an `AclBinding`, a plain value;
`bindings(scope, principals)` lists them all in a stable order, `kafka_acls_command` renders one
as a `kafka-acls.sh` line, and controller/commands/acls_cmd.py applies them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from controller.notify.runner import DEFAULT_GROUP
from controller.notify.store import STATE_TOPIC
from controller.settings import Settings
from controller.topics import STATS
from schemas import Topic


class Role(enum.StrEnum):
    CONTROLLER = "controller"
    SERVING = "serving"
    SRE = "sre"

    @property
    def default_principal(self) -> str:
        return f"User:{self.value}"


class Operation(enum.StrEnum):
    """Kafka's ACL operations used here (Read and Write imply Describe on a topic)."""

    READ = "Read"
    WRITE = "Write"
    CREATE = "Create"
    DESCRIBE = "Describe"


class Resource(enum.StrEnum):
    TOPIC = "Topic"
    GROUP = "Group"


class Pattern(enum.StrEnum):
    LITERAL = "Literal"
    PREFIXED = "Prefixed"


@dataclass(frozen=True, order=True)
class AclBinding:
    """Allow `principal` (`User:name`) `operation` on a resource, from any host."""

    role: Role
    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation


#: CommandListener's groups: `rollout-router.<applied_by>`
ROUTER_GROUP_PREFIX = "rollout-router."


@dataclass(frozen=True)
class AclScope:
    """The names the grants are for: one deployment of the controller."""

    topic_prefix: str = "rollout."
    consumer_group: str = "rollout-controller"
    notify_group: str = DEFAULT_GROUP
    router_group_prefix: str = ROUTER_GROUP_PREFIX

    @classmethod
    def of(cls, settings: Settings, **names: str) -> AclScope:
        """The scope of the settings' topic prefix and consumer group."""
        return cls(settings.topic_prefix, settings.consumer_group, **names)

    def topic(self, topic: Topic) -> str:
        return self.topic_prefix + topic.value

    @property
    def stats_topic(self) -> str:
        return self.topic_prefix + STATS

    @property
    def notify_state_topic(self) -> str:
        return self.topic_prefix + STATE_TOPIC

    @property
    def faust_topic_prefix(self) -> str:
        """Faust names its changelogs `<app id>-<table>-changelog` and its leader topic
        `<app id>-__assignor-__leader`; the app id is the consumer group."""
        return self.consumer_group + "-"


# which project topics each role reads and writes
_READS: dict[Role, tuple[Topic, ...]] = {
    Role.CONTROLLER: (
        Topic.DEPLOYMENTS,
        Topic.PREDICTIONS,
        Topic.LABELS,
        Topic.METRICS,
        Topic.ALERTS,
    ),
    Role.SERVING: (Topic.COMMANDS,),
    Role.SRE: (Topic.DECISIONS, Topic.ALERTS, Topic.COMMANDS, Topic.DEAD_LETTER),
}
_WRITES: dict[Role, tuple[Topic, ...]] = {
    # the deployments topic too: every rollout configures its model's monitor there
    Role.CONTROLLER: (
        Topic.COMMANDS,
        Topic.DECISIONS,
        Topic.ALERTS,
        Topic.DEAD_LETTER,
        Topic.DEPLOYMENTS,
    ),
    # router acknowledgements go to the deployments topic
    Role.SERVING: (Topic.PREDICTIONS, Topic.LABELS, Topic.METRICS, Topic.DEPLOYMENTS),
    Role.SRE: (Topic.DEPLOYMENTS,),
}


def default_principals() -> dict[Role, str]:
    return {role: role.default_principal for role in Role}


def bindings(scope: AclScope, principals: Mapping[Role, str] | None = None) -> list[AclBinding]:
    """Every grant of every role in `principals` (default: User:<role> for each role)."""
    chosen = default_principals() if principals is None else dict(principals)
    out: set[AclBinding] = set()
    for role, principal in chosen.items():

        def grant(resource: Resource, name: str, pattern: Pattern, *ops: Operation) -> None:
            out.update(AclBinding(role, principal, resource, name, pattern, op) for op in ops)  # noqa: B023

        def topics(op: Operation, names: tuple[Topic, ...]) -> None:
            for t in names:
                grant(Resource.TOPIC, scope.topic(t), Pattern.LITERAL, op)

        topics(Operation.READ, _READS[role])
        topics(Operation.WRITE, _WRITES[role])
        if role is Role.CONTROLLER:
            read, write, create = Operation.READ, Operation.WRITE, Operation.CREATE
            grant(Resource.TOPIC, scope.stats_topic, Pattern.LITERAL, read, write)
            grant(Resource.TOPIC, scope.faust_topic_prefix, Pattern.PREFIXED, create, read, write)
            grant(Resource.TOPIC, scope.notify_state_topic, Pattern.LITERAL, create, read, write)
            for group in (
                scope.consumer_group,
                f"{scope.consumer_group}.predictions",
                f"{scope.consumer_group}.labels",
                scope.notify_group,
            ):
                grant(Resource.GROUP, group, Pattern.LITERAL, read)
        elif role is Role.SERVING:
            grant(Resource.GROUP, scope.router_group_prefix, Pattern.PREFIXED, Operation.READ)
    return sorted(out)


def kafka_acls_command(binding: AclBinding, bootstrap: str = "$BOOTSTRAP") -> str:
    """The `kafka-acls.sh` line that creates `binding`."""
    kind = "--topic" if binding.resource is Resource.TOPIC else "--group"
    return (
        f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config admin.properties "
        f"--add --allow-principal {binding.principal} --operation {binding.operation} "
        f"{kind} '{binding.name}' --resource-pattern-type {binding.pattern.lower()}"
    )


def table(rows: list[AclBinding]) -> list[tuple[str, ...]]:
    """The grants as rows (role, principal, operations, resource, pattern, name), one row per
    resource with its operations together."""
    merged: dict[tuple[Role, str, Resource, Pattern, str], list[str]] = {}
    for b in rows:
        merged.setdefault((b.role, b.principal, b.resource, b.pattern, b.name), []).append(
            b.operation.value
        )
    return [
        (role.value, principal, ",".join(ops), resource.value, pattern.value, name)
        for (role, principal, resource, pattern, name), ops in merged.items()
    ]
