"""The `rollout` command.

Each subcommand lives in its own module under controller/commands and is registered here, so the
entry point stays small and a broken optional part never hides the others.
"""

from __future__ import annotations

import click

from controller.commands import register_all
from controller.errors import RolloutError
from controller.settings import SettingsError


class _Rollout(click.Group):
    """The command group: a person's mistake (invalid settings, a broker that cannot be
    reached or refuses the login, a bad plan or policy) is told in one sentence that says what
    to change, printed as `Error: ...` with exit code 1, not a traceback. Every error raised on
    purpose is a RolloutError; kafka-python's own errors that get past the pre-flight probe
    (controller.kafka_clients) are worded here too. Anything else is a bug: its traceback
    shows."""

    def invoke(self, ctx: click.Context) -> object:
        from kafka.errors import KafkaError

        try:
            return super().invoke(ctx)
        except (SettingsError, RolloutError) as exc:
            raise click.ClickException(str(exc)) from exc
        except KafkaError as exc:
            from controller.kafka_clients import describe_kafka_error

            raise click.ClickException(describe_kafka_error(exc)) from exc


@click.group(cls=_Rollout, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rollout-controller", prog_name="rollout")
def cli() -> None:
    """rollout-controller: safe ML model releases decided on the event stream."""


register_all(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
