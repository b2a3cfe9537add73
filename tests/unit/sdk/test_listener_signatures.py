"""Given the controller's public keys, the command listener applies only commands signed with
one of them, within its validity, and answers every other command with command.refused.

The stand-ins are the Kafka clients of tests/unit/sdk/test_listener.py; the keys and the
signatures are real Ed25519 (controller.security.signing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import schemas as s
from controller.cli import cli
from controller.sdk import CommandListener
from controller.security.signing import KeyRing, SigningKey
from tests.factories import T0
from tests.unit.sdk.test_listener import ACKS, TOPIC, Broker, make_command

CONTROLLER = "rollout-controller"
NOW = T0 + timedelta(seconds=1)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate("controller-1", CONTROLLER)


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate("controller-2", CONTROLLER)


def trusting(*keys: SigningKey, **validity: datetime) -> KeyRing:
    """The routers' trusted keys: these keys, each with the validity given."""
    entries = [{"id": k.key_id, "public_key": k.public_text(), **validity} for k in keys]
    return KeyRing.trusted({"keys": entries}, owner=CONTROLLER)


def signed_event(
    key: SigningKey, signed_at: datetime = T0, **overrides: Any
) -> s.Envelope[s.Command]:
    command = key.sign(make_command(**overrides), signed_at=signed_at)
    return s.make_event(command, source=CONTROLLER, time=T0)


def unsigned_event(**overrides: Any) -> s.Envelope[s.Command]:
    return s.make_event(make_command(**overrides), source=CONTROLLER, time=T0)


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def applied() -> list[s.Command]:
    return []


@pytest.fixture
def make_listener(
    broker: Broker, applied: list[s.Command]
) -> Iterator[Callable[..., CommandListener]]:
    made: list[CommandListener] = []

    def make(trusted_keys: KeyRing | None) -> CommandListener:
        listener = CommandListener(
            consumer=broker.consumer,
            producer=broker.producer,
            topic=TOPIC,
            ack_topic=ACKS,
            apply=applied.append,
            applied_by="router-a",
            deployment_ids=["dep-1"],
            clock=lambda: NOW,
            trusted_keys=trusted_keys,
        )
        made.append(listener)
        return listener

    yield make
    for listener in made:
        listener.close()


def answers(broker: Broker) -> list[s.Payload]:
    return [event.data for _, _, event, _ in broker.acks]


def refusal_reasons(broker: Broker) -> list[str]:
    return [a.reason for a in answers(broker) if isinstance(a, s.CommandRefused)]


# ---- a trusted key ----------------------------------------------------------------------------


def test_a_command_signed_with_the_controllers_key_is_applied_and_acknowledged(
    broker: Broker,
    applied: list[s.Command],
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
) -> None:
    listener = make_listener(trusting(key))
    event = signed_event(key)
    broker.line_up(event)

    assert 1 == listener.poll_once()

    assert [event.data] == applied
    assert [
        s.TrafficApplied(
            deployment_id="dep-1",
            command_id="cmd-1",
            canary_percent=25.0,
            applied_by="router-a",
            applied_at=NOW,
        )
    ] == answers(broker)
    assert (1, 0) == (listener.stats().applied, listener.stats().refused)


def tampered(key: SigningKey, **overrides: Any) -> s.Envelope[s.Command]:
    """Signed at 25 %, then changed to 100 % on the way."""
    event = signed_event(key, **overrides)
    return event.model_copy(
        update={"data": event.data.model_copy(update={"canary_percent": 100.0})}
    )


def untrusted(_key: SigningKey, other_key: SigningKey) -> s.Envelope[s.Command]:
    return signed_event(other_key)


REFUSED: dict[str, tuple[Callable[[SigningKey, SigningKey], s.Envelope[s.Command]], str]] = {
    "unsigned": (lambda _k, _o: unsigned_event(), "signature: not signed"),
    "changed after signing": (
        lambda k, _o: tampered(k),
        "signature: the signature does not verify with key 'controller-1'",
    ),
    "signed with an untrusted key": (
        untrusted,
        "signature: signed with key 'controller-2', which is not registered",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_command_that_is_not_signed_with_a_trusted_key_is_refused_not_applied(
    case: str,
    broker: Broker,
    applied: list[s.Command],
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
    other_key: SigningKey,
) -> None:
    build, reason = REFUSED[case]
    listener = make_listener(trusting(key))
    broker.line_up(build(key, other_key))

    assert 0 == listener.poll_once()

    assert [] == applied
    ((topic, record_key, event, _),) = broker.acks
    assert (ACKS, b"dep-1", "router-a") == (topic, record_key, event.source)
    refused = event.data
    assert isinstance(refused, s.CommandRefused)
    assert ("dep-1", "cmd-1", "router-a", NOW) == (
        refused.deployment_id,
        refused.command_id,
        refused.refused_by,
        refused.refused_at,
    )
    assert refused.reason.startswith(reason), refused.reason
    stats = listener.stats()
    assert (1, 0, 0, 1) == (stats.refused, stats.applied, stats.duplicates, stats.acked)
    assert "cmd-1" not in listener.seen


@pytest.mark.parametrize(
    ("validity", "reason"),
    [
        ({"revoked_at": T0 - timedelta(seconds=1)}, "was revoked at"),
        ({"revoked_at": T0}, "was revoked at"),
        ({"not_before": T0 + timedelta(seconds=1)}, "is valid from"),
        ({"not_after": T0 - timedelta(seconds=1)}, "expired at"),
    ],
)
def test_a_command_signed_outside_its_keys_validity_is_refused(
    validity: dict[str, datetime],
    reason: str,
    broker: Broker,
    applied: list[s.Command],
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
) -> None:
    listener = make_listener(trusting(key, **validity))
    broker.line_up(signed_event(key, signed_at=T0))

    assert 0 == listener.poll_once()

    assert [] == applied
    (refused,) = refusal_reasons(broker)
    assert refused.startswith("signature: key 'controller-1' ") and reason in refused, refused
    assert 1 == listener.stats().refused


def test_a_command_signed_within_its_keys_validity_is_applied(
    applied: list[s.Command],
    broker: Broker,
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
) -> None:
    """Signed before the key's revocation and its expiry: it counts, even read after both."""
    validity = {
        "not_before": T0 - timedelta(days=1),
        "not_after": T0 + timedelta(microseconds=1),
        "revoked_at": T0 + timedelta(microseconds=1),
    }
    listener = make_listener(trusting(key, **validity))
    broker.line_up(signed_event(key, signed_at=T0))

    assert 1 == listener.poll_once()
    assert ["cmd-1"] == [c.command_id for c in applied]


def test_a_refused_command_is_not_remembered_so_a_signed_redelivery_applies(
    broker: Broker,
    applied: list[s.Command],
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
) -> None:
    listener = make_listener(trusting(key))
    broker.line_up(unsigned_event(), tampered(key))
    broker.line_up(signed_event(key))

    assert 0 == listener.poll_once()
    assert 1 == listener.poll_once()

    assert ["cmd-1"] == [c.command_id for c in applied]
    assert [s.CommandRefused, s.CommandRefused, s.TrafficApplied] == [
        type(a) for a in answers(broker)
    ]
    assert (2, 1) == (listener.stats().refused, listener.stats().applied)


def test_a_duplicate_is_checked_too_a_forged_copy_of_an_applied_command_is_refused(
    broker: Broker,
    applied: list[s.Command],
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
) -> None:
    listener = make_listener(trusting(key))
    broker.line_up(signed_event(key), tampered(key), signed_event(key))

    assert 1 == listener.poll_once()

    assert 1 == len(applied)
    assert [s.TrafficApplied, s.CommandRefused, s.TrafficApplied] == [
        type(a) for a in answers(broker)
    ]
    assert (1, 1) == (listener.stats().refused, listener.stats().duplicates)


def test_without_trusted_keys_every_command_applies_as_before(
    applied: list[s.Command],
    broker: Broker,
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
    other_key: SigningKey,
) -> None:
    listener = make_listener(None)
    broker.line_up(
        unsigned_event(),
        signed_event(other_key, command_id="cmd-2"),
        tampered(key, command_id="cmd-3"),
    )
    broker.line_up(signed_event(key, command_id="cmd-4"))

    assert 3 == listener.poll_once()
    assert 1 == listener.poll_once()

    assert ["cmd-1", "cmd-2", "cmd-3", "cmd-4"] == [c.command_id for c in applied]
    assert 0 == listener.stats().refused
    assert all(isinstance(a, s.TrafficApplied) for a in answers(broker))


# ---- key rotation -----------------------------------------------------------------------------


def test_during_a_rotation_commands_signed_with_the_old_or_the_new_key_apply(
    applied: list[s.Command],
    broker: Broker,
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
    other_key: SigningKey,
) -> None:
    listener = make_listener(trusting(key, other_key))
    broker.line_up(signed_event(key), signed_event(other_key, command_id="cmd-2"))

    assert 2 == listener.poll_once()
    assert 0 == listener.stats().refused


def test_after_a_rotation_the_old_keys_commands_are_refused(
    applied: list[s.Command],
    broker: Broker,
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
    other_key: SigningKey,
) -> None:
    new = other_key
    listener = make_listener(trusting(new))
    broker.line_up(signed_event(key), signed_event(new, command_id="cmd-2"))

    assert 1 == listener.poll_once()

    assert ["cmd-2"] == [c.command_id for c in applied]
    assert ["signature: signed with key 'controller-1', which is not registered"] == (
        refusal_reasons(broker)
    )


def public_entry(key_file: Path) -> list[dict[str, Any]]:
    """The entry `rollout keys public` prints for a key file, parsed."""
    result = CliRunner().invoke(cli, ["keys", "public", str(key_file)])
    assert 0 == result.exit_code, result.output
    entry: list[dict[str, Any]] = yaml.safe_load(result.output)
    return entry


def test_a_trusted_keys_file_from_rollout_keys_public_drives_the_listener(
    tmp_path: Path,
    applied: list[s.Command],
    broker: Broker,
    make_listener: Callable[..., CommandListener],
    key: SigningKey,
    other_key: SigningKey,
) -> None:
    """The old key (the CLI's entry, expiring at T0) and the new one (from public_text), as a
    router's trusted-keys file: the old key's commands count up to its expiry only."""
    old_file = tmp_path / "controller-1.key"
    key.save(old_file)
    old_entry = public_entry(old_file)
    old_entry[0]["not_after"] = T0.isoformat()
    new_entry = {"id": other_key.key_id, "public_key": other_key.public_text()}
    trusted_file = tmp_path / "controller-keys.yaml"
    trusted_file.write_text(yaml.safe_dump({"keys": [*old_entry, new_entry]}))
    ring = KeyRing.load(trusted_file, "keys")
    assert {"controller-1", "controller-2"} == set(ring.keys)

    listener = make_listener(ring)
    broker.line_up(
        signed_event(key, signed_at=T0),
        signed_event(key, signed_at=T0 + timedelta(seconds=1), command_id="cmd-2"),
        signed_event(other_key, signed_at=T0 + timedelta(seconds=1), command_id="cmd-3"),
    )

    assert 2 == listener.poll_once()

    assert ["cmd-1", "cmd-3"] == [c.command_id for c in applied]
    (refused,) = refusal_reasons(broker)
    assert refused.startswith("signature: key 'controller-1' expired at 2026-11-25T12:00:00")


def test_the_settings_trusted_keys_file_is_read_when_no_keys_are_given(
    tmp_path: Path, broker: Broker, applied: list[s.Command], key: SigningKey
) -> None:
    from controller.settings import load_settings

    trusted_file = tmp_path / "controller-keys.yaml"
    trusted_file.write_text(
        yaml.safe_dump({"keys": [{"id": key.key_id, "public_key": key.public_text()}]})
    )
    listener = CommandListener(
        load_settings(controller_keys_file=trusted_file),
        consumer=broker.consumer,
        producer=broker.producer,
        apply=applied.append,
        applied_by="router-a",
        clock=lambda: NOW,
    )
    broker.line_up(unsigned_event(), signed_event(key, command_id="cmd-2"))

    assert 1 == listener.poll_once()
    listener.close()

    assert ["cmd-2"] == [c.command_id for c in applied]
    assert 1 == listener.stats().refused
