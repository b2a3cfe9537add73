"""`rollout keys generate|public` and `--key` on a person's request: what a person copies into
the identities file works, and a mistake is one sentence before anything is sent."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml
from click.testing import CliRunner, Result

import schemas as s
from controller.cli import cli
from controller.security.signing import KeyRing, SigningKey
from tests.factories import T0

#: A broker nobody listens on: a command that got as far as connecting would fail differently.
NO_BROKER = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "ROLLOUT_SIGNING_KEY_FILE": None}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=NO_BROKER)


def error_line(result: Result) -> str:
    assert 1 == result.exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_generate_writes_a_key_and_prints_the_entry_for_the_identities_file(
    tmp_path: Path,
) -> None:
    out = tmp_path / "alice.key"

    result = run("keys", "generate", "--identity", "alice", "--out", str(out))

    assert 0 == result.exit_code, result.output
    key = SigningKey.load(out)
    assert "alice" == key.identity
    assert key.key_id.startswith("alice-")
    # the printed entry, indented under alice's `keys:` as a person pastes it
    identities = tmp_path / "identities.yaml"
    identities.write_text(
        "identities:\n  - name: alice\n    groups: [sre]\n    keys:\n"
        + textwrap.indent(result.output, "      ")
    )
    ring = KeyRing.load(identities, "identities")
    assert {key.key_id: "alice"} == {k: v.owner for k, v in ring.keys.items()}
    approval = key.sign(s.ApprovalGranted(deployment_id="d", step=0, by="alice"), signed_at=T0)
    assert "" == ring.check(approval, T0, signer="alice")[1]


def test_generate_names_the_key_as_asked(tmp_path: Path) -> None:
    out = tmp_path / "controller.key"

    args = ["--identity", "rollout-controller", "--key-id", "ctl-1", "--out", str(out)]

    result = run("keys", "generate", *args)

    assert 0 == result.exit_code, result.output
    assert [{"id": "ctl-1", "public_key": SigningKey.load(out).public_text()}] == yaml.safe_load(
        result.output
    )


def test_two_keys_generated_the_same_day_get_ids_of_their_own(tmp_path: Path) -> None:
    """A key replaced the day it was made (a leaked one, say) can sit beside it in a file."""
    for name in ("old.key", "new.key"):
        result = run("keys", "generate", "--identity", "ci", "--out", str(tmp_path / name))
        assert 0 == result.exit_code, result.output

    old, new = SigningKey.load(tmp_path / "old.key"), SigningKey.load(tmp_path / "new.key")

    assert old.key_id != new.key_id
    KeyRing.trusted(
        {"keys": [{"id": k.key_id, "public_key": k.public_text()} for k in (old, new)]}, owner="ci"
    )


def test_generate_never_overwrites_a_key_file(tmp_path: Path) -> None:
    out = tmp_path / "alice.key"
    assert 0 == run("keys", "generate", "--identity", "alice", "--out", str(out)).exit_code
    before = out.read_bytes()

    line = error_line(run("keys", "generate", "--identity", "alice", "--out", str(out)))

    assert f"Error: {out} exists: a key file is never overwritten; choose another --out" == line
    assert before == out.read_bytes()


def test_public_prints_the_entry_again_as_yaml_or_json(tmp_path: Path) -> None:
    out = tmp_path / "alice.key"
    generated = run("keys", "generate", "--identity", "alice", "--out", str(out))
    key = SigningKey.load(out)

    as_yaml = run("keys", "public", str(out))
    as_json = run("keys", "public", str(out), "--json")

    assert (0, generated.output) == (as_yaml.exit_code, as_yaml.output)
    assert 0 == as_json.exit_code, as_json.output
    assert {"identity": "alice", "id": key.key_id, "public_key": key.public_text()} == json.loads(
        as_json.output
    )


def test_public_of_a_file_that_is_not_a_key_is_one_sentence(tmp_path: Path) -> None:
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello")

    line = error_line(run("keys", "public", str(not_a_key)))

    assert line.startswith(f"Error: {not_a_key} is not a key file"), line


def test_a_request_signed_with_someone_elses_key_is_refused_before_any_connection(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "alice.key"
    SigningKey.generate("alice-1", "alice").save(key_file)

    line = error_line(
        run("approve", "fraud-v2", "--step", "0", "--key", str(key_file), "--by", "bob")
    )

    assert (
        "Error: --by bob does not match the key's identity alice: leave --by out, or sign with "
        "bob's own key"
    ) == line


def test_a_request_with_a_key_file_that_is_not_one_is_refused_before_any_connection(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "alice.key"
    key_file.write_text("{}")

    for command in (["pause", "fraud-v2"], ["abort", "fraud-v2"], ["rollback", "fraud-v2"]):
        line = error_line(run(*command, "--key", str(key_file)))
        assert line.startswith(f"Error: {key_file} is not a key file"), line


def test_a_plan_requested_by_someone_else_than_the_key_is_refused_before_any_connection(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "alice.key"
    SigningKey.generate("alice-1", "alice").save(key_file)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "model: fraud\ncandidate_version: v2\nbaseline_version: v1\nrequested_by: bob\n"
        "plan:\n  steps:\n    - {canary_percent: 10}\n    - {canary_percent: 100}\n"
    )

    line = error_line(run("deploy", str(plan), "--key", str(key_file)))

    assert (
        "Error: the plan's requested_by bob does not match the key's identity alice: leave the "
        "plan's requested_by out, or sign with bob's own key"
    ) == line
