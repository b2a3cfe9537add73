"""`rollout monitor set | list | delete`: which models are watched in production, and how."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import click

from controller.commands.ops import (
    SOURCE,
    _consume,
    _health_line,
    _load_document,
    _send_and_answer,
    _settings,
    bootstrap_option,
    json_option,
    read_health,
    request_options,
)
from schemas import MonitorConfigured, MonitorDeleted, Topic, TrainingProfile, make_event


@click.group("monitor")
def monitor_group() -> None:
    """Watch models in production: every model gets a monitor from its rollouts; these
    commands set one up by hand, change its policy, list them and delete them."""


@monitor_group.command("set")
@click.argument("model")
@click.option("--version", help="The version serving production (default: the monitor's).")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A monitoring policy (YAML or JSON; default: the packaged one).",
)
@click.option(
    "--training-profile",
    "profile_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The training profile to judge skew against (YAML or JSON).",
)
@click.option(
    "--reference",
    type=click.Choice(["auto", "relearn", "pin"]),
    default="auto",
    show_default=True,
    help="auto: learn a reference per version; relearn: start now; pin: keep it across versions.",
)
@request_options
def monitor_set_cmd(
    model: str,
    version: str | None,
    policy_file: Path | None,
    profile_file: Path | None,
    reference: str,
    reason: str,
    by: str | None,
    bootstrap: str | None,
    as_json: bool,
    wait_s: float,
    no_wait: bool,
) -> None:
    """Watch MODEL (or change how it is watched)."""
    policy: dict[str, Any] | None = None
    if policy_file is not None:
        from controller.core.policy import PolicyError
        from controller.policy_io import load_monitoring_policy

        try:
            load_monitoring_policy(policy_file)  # refused here, in one sentence, not by the worker
        except PolicyError as exc:
            raise click.ClickException(f"{policy_file}: {exc}") from None
        loaded = _load_document(policy_file)
        policy = dict(loaded)
    profile = None
    if profile_file is not None:
        try:
            profile = TrainingProfile.model_validate(_load_document(profile_file))
        except ValueError as exc:
            raise click.ClickException(f"{profile_file}: not a training profile: {exc}") from None
    try:
        payload = MonitorConfigured(
            model=model,
            version=version,
            policy=policy,
            training_profile=profile,
            reference=reference,  # type: ignore[arg-type]  # click.Choice checked it
            by=by or getpass.getuser(),
            reason=reason,
        )
    except ValueError as exc:
        raise click.ClickException(f"cannot configure {model!r}: {exc}") from None
    event = make_event(payload, source=SOURCE)
    _send_and_answer(_settings(bootstrap), event, as_json, wait_s, no_wait)


@monitor_group.command("delete")
@click.argument("model")
@request_options
def monitor_delete_cmd(
    model: str,
    reason: str,
    by: str | None,
    bootstrap: str | None,
    as_json: bool,
    wait_s: float,
    no_wait: bool,
) -> None:
    """Stop watching MODEL (its traffic is counted as unmonitored again)."""
    try:
        payload = MonitorDeleted(model=model, by=by or getpass.getuser(), reason=reason)
    except ValueError as exc:
        raise click.ClickException(f"cannot delete {model!r}: {exc}") from None
    event = make_event(payload, source=SOURCE)
    _send_and_answer(_settings(bootstrap), event, as_json, wait_s, no_wait)


@monitor_group.command("list")
@bootstrap_option
@json_option
def monitor_list_cmd(bootstrap: str | None, as_json: bool) -> None:
    """Every model seen: watched (stage, version, open alerts) or serving without a monitor."""
    _, models, _ = read_health(
        _consume(_settings(bootstrap), [Topic.DECISIONS], follow=False, from_beginning=True)
    )
    if as_json:
        for health in sorted(models.values(), key=lambda h: h.model):
            click.echo(json.dumps(health.to_dict()))
        return
    if not models:
        click.echo("no models seen yet")
    for health in sorted(models.values(), key=lambda h: h.model):
        click.echo(_health_line(health))
        for rule, why in sorted(health.open.items()):
            click.echo(f"    open alert {rule}: {why}")


__all__ = ["monitor_group"]
