"""`rollout worker`: the live controller."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("worker")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="ROLLOUT_POLICY_FILE",
    help="Rollout policy (YAML or JSON); default: built in.",
)
@click.option(
    "--monitoring-policy",
    "monitoring_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="ROLLOUT_MONITORING_POLICY_FILE",
    help="Monitoring policy of the models without one of their own (YAML or JSON); default: "
    "built in.",
)
@click.option(
    "--loglevel",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def worker_cmd(policy_file: Path | None, monitoring_file: Path | None, loglevel: str) -> None:
    """Run the controller worker: consume the input topics, judge rollouts, publish commands,
    alerts and decisions. Settings come from the environment (see the README)."""
    import faust

    from controller.engine import Engine
    from controller.observability import configure_logging, configure_tracing
    from controller.policy_io import load_monitoring_policy
    from controller.security.signing import log_signing, signing_options
    from controller.settings import load_settings
    from controller.stream.app import RolloutWorker
    from controller.topics import create_topics

    settings = load_settings(**({"policy_file": policy_file} if policy_file else {}))
    # the policies first: a bad one is the person's mistake, told before any connection
    extra = {"monitoring": load_monitoring_policy(monitoring_file)} if monitoring_file else {}
    extra.update(signing_options(settings))
    engine = Engine.from_policy_file(settings.policy_file, **extra)
    configure_logging(level=loglevel.upper())
    configure_tracing("rollout-worker")
    create_topics(settings)  # probes the brokers first (controller.kafka_clients)
    log_signing(engine)  # after the probe: a broker that cannot be reached is the one line
    worker = RolloutWorker(settings, engine)
    runner = faust.Worker(worker.app, loglevel=loglevel, override_logging=False)
    if not _is_terminal(runner.stdout):
        # Faust's startup spinner writes its cursor codes (ESC[?25l, ESC[?25h) and " OK ^" to
        # whatever stdout is; in a log file or a container's log they are noise
        runner.spinner = None
    runner.execute_from_commandline()


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False
