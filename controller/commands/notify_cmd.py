"""`rollout notify`: relay the alerts topic to people (webhooks, Slack, PagerDuty, email), with
Alertmanager-style routing, grouping and dedup; `rollout notify test` sends a test notification
to one receiver. docs/notifications.md is the reference."""

from __future__ import annotations

import signal
import time
from typing import Any

import click

from controller.commands.ops import bootstrap_option


def _load(path: str) -> Any:
    from controller.notify.config_io import NotifyConfigFileError, load_config

    try:
        return load_config(path)
    except NotifyConfigFileError as exc:
        raise click.ClickException(str(exc)) from None


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="ROLLOUT_NOTIFY_CONFIG",
    help="The routing config (YAML): receivers, routes, grouping. See docs/notifications.md.",
)


@click.group("notify", invoke_without_command=True)
@config_option
@click.option("--once", is_flag=True, help="Read to the end of the alerts topic, send, exit.")
@click.option(
    "--from-beginning",
    is_flag=True,
    help="A group with no committed offsets starts at the topic's beginning, not its end.",
)
@click.option(
    "--group",
    "group_id",
    default="rollout-notify",
    show_default=True,
    envvar="ROLLOUT_NOTIFY_GROUP",
    help="Consumer group, and the key of this notifier's state in the state topic.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="ROLLOUT_NOTIFY_METRICS_PORT",
    help="Serve /metrics, /healthz and /readyz on this port (0: any free port, logged).",
)
@click.option("--log-level", default="INFO", show_default=True)
@bootstrap_option
@click.pass_context
def notify_group(
    ctx: click.Context,
    config_path: str | None,
    once: bool,
    from_beginning: bool,
    group_id: str,
    metrics_port: int | None,
    log_level: str,
    bootstrap: str | None,
) -> None:
    """Send the alerts of the alerts topic to people, routed and grouped by the config."""
    if ctx.invoked_subcommand is not None:
        return
    if not config_path:
        raise click.UsageError("give --config notify.yaml (or ROLLOUT_NOTIFY_CONFIG)")
    from controller.commands.ops import _settings
    from controller.errors import RolloutError
    from controller.notify.runner import Notifier
    from controller.observability import configure_logging

    config = _load(config_path)
    configure_logging(level=log_level.upper())
    settings = _settings(bootstrap)
    notifier = Notifier(settings, config, group_id=group_id, from_beginning=from_beginning)
    server = None
    if metrics_port is not None:
        server = _serve_probes(notifier, config, settings, metrics_port)

    def stop(*_: Any) -> None:
        notifier.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        notifier.run(once=once)
    except RolloutError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if server is not None:
            server.close()


def _serve_probes(notifier: Any, config: Any, settings: Any, port: int) -> Any:
    """/metrics, /healthz (the loop turns, or a delivery is retrying) and /readyz (the
    consumer is placed and the state loaded), as the worker serves them."""
    import prometheus_client
    import structlog

    from controller.observability.metrics import HealthServer

    # a delivery may wait its longest backoff between two signs of life
    longest = max((r.retry.max_backoff_s for r in config.receivers.values()), default=0.0)
    stall_s = max(settings.health_stall_s, longest + 60.0)

    def alive() -> tuple[bool, str]:
        age = time.monotonic() - notifier.beat
        if age > stall_s:
            return False, f"the notifier has not turned for {age:.0f} s (limit {stall_s:g})"
        return True, "the notifier turns"

    def ready() -> tuple[bool, str]:
        if notifier.started:
            return True, "relaying the alerts topic"
        return False, "starting: loading its state and placing its consumer"

    try:
        server = HealthServer(
            prometheus_client.REGISTRY,
            alive=alive,
            ready=ready,
            host=settings.metrics_host,
            port=port,
        ).start()
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics and health on {settings.metrics_host}:{port} "
            f"({exc.strerror or exc}): give --metrics-port a free port"
        ) from None
    structlog.get_logger(__name__).info("metrics.serving", port=server.port)
    return server


@notify_group.command("test")
@config_option
@click.option("--receiver", required=True, help="The receiver to send the test to.")
def notify_test_cmd(config_path: str | None, receiver: str) -> None:
    """Send one test notification to a receiver, with its retries; exit 1 if it is not
    delivered."""
    if not config_path:
        raise click.UsageError("give --config notify.yaml (or ROLLOUT_NOTIFY_CONFIG)")
    from controller.notify.delivery import deliver
    from controller.notify.runner import test_notification
    from controller.notify.sinks import build_sink

    config = _load(config_path)
    if receiver not in config.receivers:
        raise click.ClickException(
            f"{config_path} has no receiver {receiver!r}; it has: {', '.join(config.receivers)}"
        )
    spec = config.receivers[receiver]
    outcome = deliver(
        build_sink(spec, config.external_url),
        test_notification(receiver, time.time()),
        spec.retry,
        on_retry=lambda n, exc, pause: click.echo(
            f"attempt {n} failed ({exc}); again in {pause:.1f} s", err=True
        ),
    )
    if outcome.result != "delivered":
        raise click.ClickException(f"not delivered to {receiver}: {outcome.error}")
    click.echo(f"delivered to {receiver} ({spec.kind}) in {outcome.attempts} attempt(s)")
