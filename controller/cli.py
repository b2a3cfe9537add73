"""The `rollout` command.

Each subcommand lives in its own module under controller/commands and is registered here, so the
entry point stays small and a broken optional part never hides the others.
"""

from __future__ import annotations

import click

from controller.commands import register_all
from controller.settings import SettingsError


class _Rollout(click.Group):
    """The command group: invalid settings from the environment are a person's mistake, told
    in one sentence that names the variable, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Rollout, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rollout-controller", prog_name="rollout")
def cli() -> None:
    """rollout-controller: safe ML model releases decided on the event stream."""


register_all(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
