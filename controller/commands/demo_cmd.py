"""`rollout demo`."""

from __future__ import annotations

import click


@click.command("demo")
@click.option(
    "--timeout",
    type=float,
    default=110.0,
    show_default=True,
    help="Give up after this many seconds.",
)
def demo_cmd(timeout: float) -> None:
    """Two rollouts on a real broker: a healthy candidate promoted, a slow one rolled back."""
    from controller.dev.demo import run_demo

    raise SystemExit(run_demo(timeout_s=timeout, out=lambda line: click.echo(line)))
