"""`rollout pool set | list | delete`: shared quota pools, which pipelines share them, and how
they are doing (issue 14). The worker judges the pools (controller/core/pipelines/quota.py);
these commands configure them and read its decisions and alerts back."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
from pydantic import ValidationError

from controller.commands.ops import (
    SOURCE,
    _consume,
    _send_and_answer,
    _settings,
    bootstrap_option,
    json_option,
    request_options,
)
from controller.errors import RolloutError
from schemas import (
    Alert,
    Envelope,
    PipelineDecision,
    QuotaPoolConfigured,
    QuotaPoolDeleted,
    Topic,
    make_event,
)

#: the keys a --pipeline value may set, after `NAME:`
MEMBER_KEYS = ("weight", "guaranteed")
MEMBER_FORMAT = "NAME[:weight=W][,guaranteed=G]"

#: a contract field -> the flag (or argument) a person sets it with
_FLAGS = {
    "pool": "POOL",
    "resource": "--resource",
    "unit": "--unit",
    "limit": "--limit",
    "warning": "--warning",
    "critical": "--critical",
    "throttle": "--throttle",
    "by": "--by",
    "reason": "--reason",
}

#: what to change, for the contract's refusals that name no single field
_HINTS = (
    ("must be below critical", "lower --warning or raise --critical"),
    ("guaranteed shares add up", "lower a --pipeline's guaranteed= or raise --limit"),
    ("listed once each", "give each --pipeline once"),
)


class PoolFlagError(RolloutError):
    """A person's flags do not make a valid pool request; the message says what to change."""


def parse_member(text: str) -> dict[str, Any]:
    """One `--pipeline NAME[:weight=W][,guaranteed=G]` as the fields of a `PoolMember` (the
    contract checks the values)."""
    name, colon, options = text.partition(":")
    member: dict[str, Any] = {"pipeline": name}
    if not name.strip():
        raise PoolFlagError(f"--pipeline {text!r} names no pipeline: use {MEMBER_FORMAT}")
    if colon and not options.strip():
        raise PoolFlagError(
            f"--pipeline {text!r} has nothing after ':': use {MEMBER_FORMAT}, or the name alone"
        )
    for item in options.split(",") if colon else ():
        key, equals, value = (part.strip() for part in item.partition("="))
        if key not in MEMBER_KEYS or not equals:
            raise PoolFlagError(
                f"--pipeline {text!r}: {item.strip()!r} is not weight=W or guaranteed=G "
                f"(use {MEMBER_FORMAT})"
            )
        if key in member:
            raise PoolFlagError(f"--pipeline {text!r} sets {key} twice: give it once")
        try:
            member[key] = float(value)
        except ValueError:
            raise PoolFlagError(
                f"--pipeline {text!r}: {key} must be a number, got {value!r}"
            ) from None
    return member


def pool_configured(
    pool: str,
    *,
    resource: str,
    limit: float,
    unit: str = "1",
    pipelines: Sequence[str] = (),
    warning: float = 0.8,
    critical: float = 0.95,
    throttle: bool = False,
    by: str,
    reason: str = "",
) -> QuotaPoolConfigured:
    """The `QuotaPoolConfigured` a person's flags ask for; `PoolFlagError` (one sentence that
    names the flag to change) when they do not make one."""
    members = [parse_member(p) for p in pipelines]
    fields = {
        "pool": pool,
        "resource": resource,
        "unit": unit,
        "limit": limit,
        "pipelines": members,
        "warning": warning,
        "critical": critical,
        "throttle": throttle,
        "by": by,
        "reason": reason,
    }
    try:
        return QuotaPoolConfigured.model_validate(fields)
    except ValidationError as exc:
        raise PoolFlagError(
            f"cannot configure pool {pool!r}: {_sentence(exc, pipelines)}"
        ) from None


def pool_deleted(pool: str, *, by: str, reason: str = "") -> QuotaPoolDeleted:
    try:
        return QuotaPoolDeleted.model_validate({"pool": pool, "by": by, "reason": reason})
    except ValidationError as exc:
        raise PoolFlagError(f"cannot delete pool {pool!r}: {_sentence(exc, ())}") from None


def _sentence(exc: ValidationError, pipelines: Sequence[str]) -> str:
    """The contract's refusal in one sentence, in the flags' words."""
    parts = []
    for error in exc.errors():
        loc = error["loc"]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "string_pattern_mismatch":
            message = "must not be empty nor start or end with a blank"
        elif message.startswith("Input should be "):
            message = "must be " + message.removeprefix("Input should be ")
        elif message.startswith("String should have "):
            message = "must have " + message.removeprefix("String should have ")
        if not loc:
            hint = next((h for needle, h in _HINTS if needle in message), None)
            parts.append(f"{message} ({hint})" if hint else message)
        elif loc[0] == "pipelines" and len(loc) >= 3 and isinstance(loc[1], int):
            raw = pipelines[loc[1]] if loc[1] < len(pipelines) else "?"
            parts.append(f"--pipeline {raw!r}: {loc[2]} {message}, got {error.get('input')!r}")
        else:
            flag = _FLAGS.get(str(loc[0]), str(loc[0]))
            parts.append(f"{flag} {message}, got {error.get('input')!r}")
    return "; ".join(parts)


# ---- reading the pools back -----------------------------------------------------------------


@dataclass
class PoolHealth:
    """A quota pool as its decisions and alerts tell it."""

    pool: str
    configured: bool = False
    resource: str | None = None
    unit: str = "1"
    limit: float | None = None
    pipelines: list[str] = field(default_factory=list)
    throttle: bool = False
    #: the last decision: its action, time and reason
    last_action: str | None = None
    last_at: str | None = None
    last: str = ""
    #: pipeline -> the use it is throttled to
    throttled: dict[str, float | None] = field(default_factory=dict)
    #: open alerts by dedup key (`<pool>/<pipeline>/quota.<rule>`)
    open: dict[str, Alert] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return "configured" if self.configured else "deleted"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "state": self.state,
            "resource": self.resource,
            "unit": self.unit,
            "limit": self.limit,
            "pipelines": list(self.pipelines),
            "throttle": self.throttle,
            "last_decision": {"action": self.last_action, "at": self.last_at, "reason": self.last},
            "throttled": dict(sorted(self.throttled.items())),
            "open_alerts": [
                {
                    "dedup_key": key,
                    "kind": a.kind,
                    "severity": a.severity.value,
                    "subject": a.subject,
                    "since": a.at.isoformat(),
                    "summary": a.summary,
                }
                for key, a in sorted(self.open.items())
            ],
        }


def read_pools(events: Iterable[Envelope[Any]]) -> dict[str, PoolHealth]:
    """Every quota pool the worker has decided about, from the decisions topic (`PipelineDecision`
    keyed by the pool) and the alerts topic (its `quota.*` alerts, keyed by the pool)."""
    pools: dict[str, PoolHealth] = {}
    alerts: dict[str, dict[str, Alert]] = {}
    for event in events:
        data = event.data
        if isinstance(data, PipelineDecision) and data.pool is not None:
            health = pools.setdefault(data.pool, PoolHealth(data.pool))
            health.last_action, health.last = data.action, data.reason
            health.last_at = data.at.isoformat()
            evidence = data.evidence
            if data.action == "configured":
                health.configured = True
                health.resource = str(evidence.get("resource", health.resource))
                health.unit = str(evidence.get("unit", health.unit))
                limit = evidence.get("limit")
                health.limit = float(limit) if isinstance(limit, int | float) else None
                health.pipelines = [str(p) for p in evidence.get("pipelines", [])]
                health.throttle = bool(evidence.get("throttle", False))
            elif data.action == "deleted":
                health.configured = False
            elif data.action == "throttled" and data.pipeline is not None:
                limit = evidence.get("limit")
                health.throttled[data.pipeline] = (
                    float(limit) if isinstance(limit, int | float) else None
                )
            elif data.action == "released" and data.pipeline is not None:
                health.throttled.pop(data.pipeline, None)
        elif isinstance(data, Alert) and data.kind.startswith("quota."):
            bucket = alerts.setdefault(data.deployment_id, {})
            if data.status == "firing":
                bucket[data.dedup_key] = data
            else:
                bucket.pop(data.dedup_key, None)
    for pool, health in pools.items():
        health.open = dict(alerts.get(pool, {}))
    return pools


def pool_lines(health: PoolHealth) -> Iterator[str]:
    """A pool for people: what it is, its last decision, its open alerts and throttles."""
    alerts = f"{len(health.open)} open alert(s)" if health.open else "healthy"
    if health.configured and health.limit is not None:
        shared = ", ".join(health.pipelines) or "the pipelines that report to it"
        what = f"{health.limit:g} {health.unit} of {health.resource}, shared by {shared}"
        what += "; throttles on" if health.throttle else ""
    else:
        what = "no longer watched"
    yield f"{health.pool:24} {health.state:10} {what}  {alerts if health.configured else ''}"
    if health.last_action:
        yield f"    last decision {health.last_at} {health.last_action}: {health.last}"
    for pipeline, limit in sorted(health.throttled.items()):
        to = f"{limit:g} {health.unit}" if limit is not None else "its share"
        yield f"    throttled {pipeline} to {to}"
    for key, alert in sorted(health.open.items()):
        yield f"    open alert {key} ({alert.severity.value}): {alert.summary}"


# ---- the commands ---------------------------------------------------------------------------


@click.group("pool")
def pool_group() -> None:
    """Shared quota pools: a resource (GPUs, CPU, memory) with a limit, shared by pipelines
    (training, data, validation, serving) that report their use with `resource.usage.v1`
    events naming the pool. The worker alerts near the limit, forecasts exhaustion, and names
    the pipeline above its fair share or growing abnormally (docs/pipelines.md)."""


def _member_help() -> str:
    return (
        f"A pipeline sharing the pool, {MEMBER_FORMAT}: its weight in the fair division "
        "(default 1) and the share of the limit guaranteed to it, in the pool's unit. "
        "Repeat for each pipeline; unlisted pipelines that report to the pool count with "
        "weight 1."
    )


@pool_group.command("set")
@click.argument("pool")
@click.option("--resource", required=True, help="What the pool counts: gpu, cpu, memory_gb, ...")
@click.option("--limit", type=float, required=True, help="The pool's limit, in --unit.")
@click.option("--unit", default="1", show_default=True, help="The unit of the limit: gpus, ...")
@click.option("--pipeline", "pipelines", multiple=True, metavar=MEMBER_FORMAT, help=_member_help())
@click.option(
    "--warning",
    type=float,
    default=0.8,
    show_default=True,
    help="Alert (warning) when the pool's use reaches this share of the limit.",
)
@click.option(
    "--critical",
    type=float,
    default=0.95,
    show_default=True,
    help="Alert (critical) at this share of the limit; above --warning.",
)
@click.option(
    "--throttle/--no-throttle",
    default=False,
    show_default=True,
    help="Publish throttle commands (pipeline.throttle.v1, commands topic) for the pipeline "
    "above its fair share or growing abnormally; without, the alerts alone say what to do.",
)
@request_options
def pool_set_cmd(
    pool: str,
    resource: str,
    limit: float,
    unit: str,
    pipelines: tuple[str, ...],
    warning: float,
    critical: float,
    throttle: bool,
    reason: str,
    by: str | None,
    bootstrap: str | None,
    as_json: bool,
    wait_s: float,
    no_wait: bool,
) -> None:
    """Configure quota pool POOL (or change it): keyed by the pool on the deployments topic."""
    try:
        payload = pool_configured(
            pool,
            resource=resource,
            limit=limit,
            unit=unit,
            pipelines=pipelines,
            warning=warning,
            critical=critical,
            throttle=throttle,
            by=by or getpass.getuser(),
            reason=reason,
        )
    except PoolFlagError as exc:
        raise click.ClickException(str(exc)) from None
    event = make_event(payload, source=SOURCE)
    _send_and_answer(_settings(bootstrap), event, as_json, wait_s, no_wait)


@pool_group.command("delete")
@click.argument("pool")
@request_options
def pool_delete_cmd(
    pool: str,
    reason: str,
    by: str | None,
    bootstrap: str | None,
    as_json: bool,
    wait_s: float,
    no_wait: bool,
) -> None:
    """Stop watching quota pool POOL (its firing alerts resolve, its throttles are released)."""
    try:
        payload = pool_deleted(pool, by=by or getpass.getuser(), reason=reason)
    except PoolFlagError as exc:
        raise click.ClickException(str(exc)) from None
    event = make_event(payload, source=SOURCE)
    _send_and_answer(_settings(bootstrap), event, as_json, wait_s, no_wait)


@pool_group.command("list")
@click.argument("pool", required=False)
@bootstrap_option
@json_option
def pool_list_cmd(pool: str | None, bootstrap: str | None, as_json: bool) -> None:
    """Every quota pool with its last decision, throttles and open alerts, from the decisions
    and alerts topics (the audit trail). POOL: that pool only."""
    pools = read_pools(
        _consume(
            _settings(bootstrap), [Topic.DECISIONS, Topic.ALERTS], follow=False, from_beginning=True
        )
    )
    if pool:
        pools = {k: v for k, v in pools.items() if k == pool}
        if not pools:
            raise click.ClickException(f"no decisions about pool {pool!r} yet")
    if as_json:
        for health in sorted(pools.values(), key=lambda h: h.pool):
            click.echo(json.dumps(health.to_dict()))
        return
    if not pools:
        click.echo("no quota pools yet")
    for health in sorted(pools.values(), key=lambda h: h.pool):
        for line in pool_lines(health):
            click.echo(line.rstrip())


__all__ = [
    "PoolFlagError",
    "PoolHealth",
    "parse_member",
    "pool_configured",
    "pool_deleted",
    "pool_group",
    "pool_lines",
    "read_pools",
]
