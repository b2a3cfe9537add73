"""`rollout replay LOG` and `rollout simulate --scenario NAME`: the core over a recorded log, and
realistic logs to record (see controller.replay)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click

from controller.dev.production import PRODUCTION_SCENARIOS
from controller.dev.simulate import FAMILIES, PLANS, SCENARIOS


def _policy(path: Path | None) -> Any:
    from controller.core.policy import PolicyError
    from controller.policy_io import default_policy, load_policy

    try:
        return default_policy() if path is None else load_policy(path)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


policy_option = click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Policy file (YAML or JSON); default: the packaged default policy.",
)


@click.command("replay")
@click.argument("log", type=click.Path(allow_dash=True, dir_okay=False))
@policy_option
@click.option(
    "--summary",
    is_flag=True,
    help="A table per deployment instead of the outputs (with --outputs: the table to stderr).",
)
@click.option(
    "--outputs",
    "outputs",
    is_flag=True,
    help="Print the outputs, the envelopes the worker would publish, one per line (the "
    "default without --summary).",
)
@click.option(
    "--tick",
    "tick_s",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Tick the core every S seconds of event time between events (0: never).",
)
@click.option(
    "--until",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"]),
    default=None,
    help="Tick on past the last event to this time (RFC 3339 with its offset, e.g. "
    "2026-12-03T02:10:00+00:00): when the log was taken, as `rollout export` prints it.",
)
@click.option(
    "--identities",
    "identities_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The worker's identities file: verify control events as it did (refusing the same).",
)
@click.option(
    "--command-key",
    "command_key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The worker's command key: sign the commands as it did (the same bytes).",
)
def replay_cmd(
    log: str,
    policy_path: Path | None,
    summary: bool,
    outputs: bool,
    tick_s: float,
    until: datetime | None,
    identities_file: Path | None,
    command_key_file: Path | None,
) -> None:
    """Run the rollout core over LOG (JSON lines of CloudEvents; - for stdin), through the
    same engine as the live worker (`rollout export` takes LOG from a live run's topics).

    Prints what the worker would publish (commands, alerts, decisions) as CloudEvents JSON
    lines, one per line, in the worker's order and with its ids; the `type` says which. Lines
    that are not valid events go to stderr as {"kind": "rejected", ...} JSON lines and are
    skipped. Same log, same policy: same bytes.
    """
    from controller.replay.replay import read_lines, replay, summary_table
    from controller.security.signing import KeyRing, SigningKey

    policy = _policy(policy_path)
    identities = None if identities_file is None else KeyRing.load(identities_file, "identities")
    command_key = None if command_key_file is None else SigningKey.load(command_key_file)
    out = sys.stdout.buffer
    err = sys.stderr.buffer

    print_outputs = outputs or not summary

    def emit(event: Any) -> None:
        if print_outputs:
            out.write(event.to_json() + b"\n")

    def reject(rejected: Any) -> None:
        err.write(rejected.to_json() + b"\n")
        err.flush()

    try:
        result = replay(
            read_lines(log),
            policy,
            tick_s=tick_s,
            emit=emit,
            reject=reject,
            until=None if until is None else until.timestamp(),
            identities=identities,
            command_key=command_key,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot read {log}: {exc.strerror}") from exc
    if summary:
        table = out if not outputs else err
        table.write(summary_table(result).encode() + b"\n")
    out.flush()


def write_log(events: Iterable[Any], stream: IO[bytes]) -> int:
    """Write events as a log: CloudEvents JSON lines, as they travel on the topics."""
    count = 0
    for event in events:
        stream.write(event.to_json() + b"\n")
        count += 1
    return count


#: Options of a rollout's log that a production log does not take.
_ROLLOUT_ONLY = ("rate", "plan_name", "onset_s", "canary_batch_s", "open_loop_s", "policy_path")


@click.command("simulate")
@click.option(
    "--scenario",
    "scenario_name",
    type=click.Choice(list(SCENARIOS)),
    default=None,
    help="What the canary does wrong (healthy: nothing). A rollout's log.",
)
@click.option(
    "--production",
    "production_name",
    default=None,
    metavar="SCENARIO",
    help="A model in production instead of a rollout: one version serving a daily cycle of "
    "traffic for days, under SCENARIO: " + ", ".join(PRODUCTION_SCENARIOS) + ".",
)
@click.option(
    "--pipelines",
    "pipelines_name",
    default=None,
    metavar="SCENARIO",
    help="A shared GPU pool and its serving, training and data pipelines instead of a rollout "
    "(controller.dev.pipelines_sim), 8 hours, the change 4 hours in: healthy, runaway, "
    "slow_leak, slow_training, foreign_test_set.",
)
@click.option(
    "--days",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="How long a production log lasts (default: the scenario's own length).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Same seed, same log (required with --scenario; a production log's default: 1).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.0, min_open=True),
    default=20.0,
    show_default=True,
    help="Canary requests per second in the first traffic step (baseline: the rest).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(allow_dash=True, dir_okay=False),
    default="-",
    show_default=True,
    help="Where to write the log (JSON lines).",
)
@click.option(
    "--plan",
    "plan_name",
    type=click.Choice(list(PLANS)),
    default="standard",
    show_default=True,
    help="The deployment's rollout plan.",
)
@click.option(
    "--onset",
    "onset_s",
    type=click.FloatRange(min=0.0),
    default=60.0,
    show_default=True,
    help="Seconds after the canary gets traffic when the fault starts.",
)
@click.option(
    "--predictions",
    "kind",
    type=click.Choice(["score", "class", "probabilities"]),
    default="score",
    show_default=True,
    help="What the model predicts.",
)
@click.option(
    "--canary-batch",
    "canary_batch_s",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Batch canary predictions every S seconds (default: one record per prediction).",
)
@click.option(
    "--family",
    "family_name",
    type=click.Choice(list(FAMILIES)),
    default="independent",
    show_default=True,
    help="How traffic behaves apart from the cohorts: "
    + "; ".join(f"{f.name}: {f.summary}" for f in FAMILIES.values())
    + ".",
)
@click.option(
    "--run-length",
    "run_length",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Mean length of the error runs in requests (a family with error runs; default 20).",
)
@click.option(
    "--open-loop",
    "open_loop_s",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="No controller: S seconds at the first step's traffic share.",
)
@policy_option
@click.pass_context
def simulate_cmd(
    ctx: click.Context,
    scenario_name: str | None,
    production_name: str | None,
    pipelines_name: str | None,
    days: float | None,
    seed: int | None,
    rate: float,
    out_path: str,
    plan_name: str,
    onset_s: float,
    kind: str,
    canary_batch_s: float | None,
    family_name: str,
    run_length: float | None,
    open_loop_s: float | None,
    policy_path: Path | None,
) -> None:
    """Write a realistic rollout log: CloudEvents JSON lines as they travel on the topics.

    The rollout core runs in the loop with the policy: a simulated router applies its commands
    and acknowledges them (traffic.applied), a simulated approver grants what the plan gates,
    and the log ends a few seconds after a promote or rollback (or at the deadline). A summary
    of the run goes to stderr. --family picks the traffic's habits (errors in runs, bursts,
    heavy tails, shared outages, a strong rate cycle); every scenario runs on every family.

    With --production SCENARIO instead of --scenario: a model's production traffic for its
    monitor (controller.dev.production): a monitor.configured record, then the predictions of
    each second in one batch, for --days days (families: independent, errors_in_runs, bursts,
    heavy_tails).
    """
    if sum(n is not None for n in (scenario_name, production_name, pipelines_name)) != 1:
        raise click.UsageError(
            "give one of --scenario NAME (a rollout's log), --production NAME (a model in "
            "production) or --pipelines NAME (a quota pool and its pipelines)"
        )
    if pipelines_name is not None:
        _simulate_pipelines(pipelines_name, 1 if seed is None else seed, days, out_path)
        return
    if production_name is not None:
        _simulate_production(
            ctx,
            production_name,
            days,
            1 if seed is None else seed,
            family_name,
            run_length,
            kind,
            out_path,
        )
        return
    assert scenario_name is not None
    if seed is None:
        raise click.UsageError("Missing option '--seed'.")
    if days is not None:
        raise click.UsageError("--days is for a production log (--production)")
    from controller.dev.simulate import ClosedLoop, FleetConfig, generate
    from controller.replay.replay import Runner

    family = FAMILIES[family_name]
    if run_length is not None:
        if family.error_runs is None:
            raise click.UsageError(
                f"--run-length needs a family with error runs, not {family.name}"
            )
        family = family.with_run_length(run_length)
    config = FleetConfig(
        rate=rate,
        fault_onset_s=onset_s,
        prediction_kind=kind,  # type: ignore[arg-type]  # click.Choice narrows it
        canary_batch_s=canary_batch_s,
        family=family,
    )
    plan = PLANS[plan_name]
    stream: IO[bytes]
    with click.open_file(out_path, "wb") as stream:
        if open_loop_s is not None:
            count = write_log(
                generate(
                    scenario_name,
                    seed=seed,
                    duration_s=open_loop_s,
                    config=config,
                    rollout_plan=plan,
                ),
                stream,
            )
            click.echo(f"{count} records, open loop, {open_loop_s:g} s", err=True)
            return
        loop = ClosedLoop(
            scenario_name,
            Runner(_policy(policy_path)),
            seed=seed,
            config=config,
            rollout_plan=plan,
        )
        write_log(loop, stream)
    o = loop.outcome
    ended = "no terminal command" if o.terminal_action is None else o.terminal_action
    timing = ""
    if o.terminal_ms is not None:
        timing = f" at +{(o.terminal_ms - o.begin_ms) / 1000:.1f} s"
        if scenario_name != "healthy" and o.onset_ms is not None:
            since = (o.terminal_ms - o.onset_ms) / 1000
            timing += (
                f" ({since:.1f} s after the fault's onset)"
                if since >= 0
                else f" ({-since:.1f} s before the fault's onset: see --onset)"
            )
    click.echo(f"{o.deployment_id}: {o.records} records, {ended}{timing}", err=True)
    if o.terminal_reason:
        click.echo(f"  reason: {o.terminal_reason}", err=True)


def _simulate_pipelines(name: str, seed: int, days: float | None, out_path: str) -> None:
    """`rollout simulate --pipelines NAME`: a pool's and its pipelines' log, replayed for the
    summary (the alerts it raises, on stderr)."""
    import schemas as s
    from controller.dev.pipelines_sim import UnknownPipelineScenario, generate
    from controller.policy_io import default_policy
    from controller.replay.replay import replay

    hours = 8.0 if days is None else 24.0 * days
    try:
        events = list(generate(name, seed=seed, hours=hours))
    except UnknownPipelineScenario as exc:
        raise click.UsageError(str(exc)) from None
    with click.open_file(out_path, "wb") as stream:
        count = write_log(events, stream)
    fired: list[str] = []
    start = events[0].time.timestamp()

    def seen(envelope: s.Envelope[Any]) -> None:
        data = envelope.data
        if isinstance(data, s.Alert) and data.status == "firing":
            minutes = (envelope.time.timestamp() - start) / 60
            fired.append(f"  +{minutes:.0f} min {data.severity.value} {data.dedup_key}")
        elif isinstance(data, s.PipelineThrottle):
            minutes = (envelope.time.timestamp() - start) / 60
            fired.append(f"  +{minutes:.0f} min throttle {data.pipeline} to {data.limit:g}")

    replay([e.to_json() for e in events], default_policy(), emit=seen)
    click.echo(f"{count} records, {hours:g} h of {name} (seed {seed})", err=True)
    click.echo("alerts and throttles replayed from it:" if fired else "no alert", err=True)
    for line in fired:
        click.echo(line, err=True)


def _simulate_production(
    ctx: click.Context,
    name: str,
    days: float | None,
    seed: int,
    family_name: str,
    run_length: float | None,
    kind: str,
    out_path: str,
) -> None:
    """`rollout simulate --production NAME`: a production log (see simulate_cmd)."""
    from click.core import ParameterSource

    from controller.dev.production import (
        ProductionConfig,
        ProductionTraffic,
        production_family,
        production_scenario,
    )
    from controller.dev.simulate import UnknownScenarioError

    given = [
        p.opts[0]
        for p in ctx.command.params
        if p.name in _ROLLOUT_ONLY
        and ctx.get_parameter_source(p.name) not in (None, ParameterSource.DEFAULT)
    ]
    if given:
        raise click.UsageError(f"{', '.join(given)}: for a rollout's log, not --production")
    try:
        scenario = production_scenario(name)
        family = production_family(family_name)
    except UnknownScenarioError as exc:
        raise click.UsageError(str(exc)) from None
    if run_length is not None:
        if family.error_runs is None:
            raise click.UsageError(
                f"--run-length needs a family with error runs, not {family.name}"
            )
        family = family.with_run_length(run_length)
    config = ProductionConfig(
        family=family,
        prediction_kind=kind,  # type: ignore[arg-type]  # click.Choice narrows it
    )
    traffic = ProductionTraffic(scenario, seed=seed, config=config, days=days)
    stream: IO[bytes]
    with click.open_file(out_path, "wb") as stream:
        count = write_log(traffic.envelopes(), stream)
    length = (traffic.end - traffic.start) / 86400
    click.echo(
        f"{config.deployment_id}: {count} records, production scenario {scenario.name}, "
        f"{length:g} days, family {family.name}, seed {seed}",
        err=True,
    )
