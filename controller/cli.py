"""The `rollout` command.

Each subcommand lives in its own module under controller/commands and is registered here, so the
entry point stays small and a broken optional part never hides the others.
"""

from __future__ import annotations

import click

from controller.commands import register_all


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rollout-controller", prog_name="rollout")
def cli() -> None:
    """rollout-controller: safe ML model releases decided on the event stream."""


register_all(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
