"""`rollout keys`: Ed25519 keys for signed control events and commands (docs/security.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from controller.security.signing import SigningKey


@click.group("keys")
def keys_group() -> None:
    """Make and read the Ed25519 keys that sign control events (people, CI) and commands (the
    controller)."""


@keys_group.command("generate")
@click.option("--identity", required=True, help="Who signs with it: a person, a CI system, or "
              "rollout-controller for the worker's command key.")  # fmt: skip
@click.option("--key-id", default=None, help="The key's id, unique among every registered key "
              "(default: <identity>-<YYYYMMDD>-<6 random hex digits>, so that a key generated "
              "to replace one of the same day gets an id of its own).")  # fmt: skip
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The private key file to write (readable by its owner only; never overwritten).",
)
def generate_cmd(identity: str, key_id: str | None, out: Path) -> None:
    """Write a new private key file and print its public entry (YAML) for the identities file
    (a person's or CI system's key) or the routers' trusted keys (the controller's)."""
    import secrets
    from datetime import UTC, datetime

    from controller.security.signing import SigningKey

    default_id = f"{identity}-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"
    key = SigningKey.generate(key_id or default_id, identity)
    try:
        key.save(out)
    except FileExistsError:
        raise click.ClickException(
            f"{out} exists: a key file is never overwritten; choose another --out"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror}") from None
    click.echo(_entry(key), nl=False)


@keys_group.command("public")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="As JSON instead of YAML.")
def public_cmd(key_file: Path, as_json: bool) -> None:
    """Print the public entry of a private key file (what verifiers register)."""
    from controller.security.signing import SigningKey

    key = SigningKey.load(key_file)
    if as_json:
        entry = {"identity": key.identity, "id": key.key_id, "public_key": key.public_text()}
        click.echo(json.dumps(entry))
        return
    click.echo(_entry(key), nl=False)


def _entry(key: SigningKey) -> str:
    return (
        f"# identity {key.identity}: add the key under its entry in the identities file\n"
        f"# (or, for the controller's key, under `keys:` in the routers' trusted keys)\n"
        f"- id: {key.key_id}\n"
        f"  public_key: {key.public_text()}\n"
    )
