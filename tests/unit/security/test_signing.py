"""Ed25519 signatures of control events and commands: what verifies, what does not and why, and
the key files a person gets wrong, each told in one sentence.

Real keys and real signatures (the `cryptography` package), no mocks.
"""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import schemas as s
from controller.security.signing import (
    MAX_SKEW_S,
    KeyRing,
    RegisteredKey,
    SigningKey,
    SigningKeyError,
    signature_digest,
    signing_message,
)
from tests.factories import T0

ALICE = SigningKey.generate("alice-1", "alice")
BOB = SigningKey.generate("bob-1", "bob")


def identities(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"identities": list(entries)}


def person(key: SigningKey, groups: tuple[str, ...] = (), **validity: datetime) -> dict[str, Any]:
    entry = {"id": key.key_id, "public_key": key.public_text(), **validity}
    return {"name": key.identity, "groups": list(groups), "keys": [entry]}


RING = KeyRing.identities(identities(person(ALICE, ("sre",)), person(BOB)))


def approval(**overrides: Any) -> s.ApprovalGranted:
    fields: dict[str, Any] = {
        "deployment_id": "fraud-v2",
        "step": 0,
        "by": "alice",
        "reason": "Freigabe nach Prüfung — ✓ 承認",
    }
    fields.update(overrides)
    return s.ApprovalGranted(**fields)


def over_the_wire(payload: s.Payload) -> Any:
    """The payload as a worker reads it: a CloudEvent's JSON bytes, decoded."""
    event = s.decode(s.make_event(payload, source="rollout-cli", time=T0).to_json())
    assert isinstance(event, s.Envelope), event
    return event.data


def problem(payload: s.Payload, now: datetime = T0, ring: KeyRing = RING) -> str:
    key, why = ring.check(payload, now, signer=getattr(payload, "by", None))
    assert (key is None) == bool(why)
    return why


# ---- what verifies --------------------------------------------------------------------------


def test_a_signed_approval_verifies_after_its_trip_through_a_cloudevent() -> None:
    signed = over_the_wire(ALICE.sign(approval(), signed_at=T0))

    key, why = RING.check(signed, T0, signer="alice")

    assert "" == why
    assert key is not None and ("alice-1", "alice", ("sre",)) == (
        key.key_id,
        key.owner,
        key.groups,
    )
    assert "Freigabe nach Prüfung — ✓ 承認" == signed.reason


def test_identify_gives_the_verified_identity_with_its_groups_and_the_signing_act() -> None:
    signed = over_the_wire(ALICE.sign(approval(), signed_at=T0))

    identity = RING.identify(signed, T0)

    assert ("alice", ("sre",), "alice-1", True, "") == (
        identity.name,
        identity.groups,
        identity.key_id,
        identity.verified,
        identity.problem,
    )
    assert signature_digest(signed.signature) == identity.signature


def test_a_command_signed_at_its_issue_time_verifies_and_signs_the_same_bytes_again() -> None:
    controller = SigningKey.generate("controller-1", "rollout-controller")
    trusted = KeyRing.trusted(
        {"keys": [{"id": "controller-1", "public_key": controller.public_text()}]},
        owner="rollout-controller",
    )
    command = s.Command(
        command_id="cmd-1",
        deployment_id="fraud-v2",
        action="set_traffic",
        canary_percent=12.5,
        step=0,
        model="fraud",
        candidate_version="v2",
        baseline_version="v1",
        reason="step 0: approved by alice",
        evidence={"p99_ms": 201.5, "none": None, "nested": {"b": 1, "a": [1.0, "x"]}},
        issued_at=T0,
    )

    signed = controller.sign(command, signed_at=command.issued_at)

    assert ("", signed) == (problem(over_the_wire(signed), ring=trusted), over_the_wire(signed))
    assert signed == controller.sign(command, signed_at=command.issued_at)  # replay: same bytes


def test_the_message_is_the_domain_the_type_and_the_canonical_payload_without_the_value() -> None:
    signed = ALICE.sign(approval(reason=""), signed_at=T0)

    assert (
        b"rollout-controller.signature.v1\n"
        b"dev.rollout.approval.granted.v1\n"
        b'{"by":"alice","deployment_id":"fraud-v2","reason":"","signature":'
        b'{"key_id":"alice-1","signed_at":"2026-11-25T12:00:00Z"},"step":0}'
    ) == signing_message(signed)


# ---- what does not --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"deployment_id": "fraud-v3"},
        {"step": 1},
        {"reason": "Freigabe nach Prüfung — ✓ 承認."},
        {"by": "bob"},
    ],
)
def test_an_approval_changed_after_signing_does_not_verify(change: dict[str, Any]) -> None:
    signed = over_the_wire(ALICE.sign(approval(), signed_at=T0))
    changed = signed.model_copy(update=change)

    why = RING.check(changed, T0)[1]  # no signer: the signature itself is what fails

    assert why.startswith("the signature does not verify with key 'alice-1'"), why


def test_a_changed_signing_time_does_not_verify() -> None:
    signed = ALICE.sign(approval(), signed_at=T0)
    assert signed.signature is not None
    later = signed.signature.model_copy(update={"signed_at": T0 + timedelta(seconds=1)})

    why = problem(signed.model_copy(update={"signature": later}), now=T0 + timedelta(seconds=2))

    assert why.startswith("the signature does not verify with key 'alice-1'"), why


def test_an_approvals_signature_does_not_pass_as_a_denials() -> None:
    signed = ALICE.sign(approval(), signed_at=T0)
    denial = s.ApprovalDenied(**signed.model_dump())

    assert "" == problem(signed)
    assert problem(over_the_wire(denial)).startswith("the signature does not verify")


def test_an_unsigned_event_is_not_signed() -> None:
    assert "not signed" == problem(approval())
    assert (None, "not signed") == RING.check(approval(), T0)


def test_a_key_nobody_registered_does_not_count() -> None:
    stranger = SigningKey.generate("mallory-1", "alice")

    why = problem(stranger.sign(approval(), signed_at=T0))

    assert "signed with key 'mallory-1', which is not registered" == why


def test_a_key_of_another_identity_does_not_sign_for_alice() -> None:
    signed = BOB.sign(approval(by="alice"), signed_at=T0)

    assert "key 'bob-1' belongs to 'bob', not to 'alice'" == problem(signed)
    assert "" == RING.check(signed, T0)[1]  # the signature itself is bob's and sound


def test_a_signature_after_the_keys_revocation_does_not_count_one_before_it_does() -> None:
    ring = KeyRing.identities(identities(person(ALICE, revoked_at=T0)))

    after = ALICE.sign(approval(), signed_at=T0 + timedelta(seconds=1))
    at = ALICE.sign(approval(), signed_at=T0)
    before = ALICE.sign(approval(), signed_at=T0 - timedelta(seconds=1))

    now = T0 + timedelta(hours=1)
    assert "key 'alice-1' was revoked at 2026-11-25T12:00:00+00:00" == problem(after, now, ring)
    assert "key 'alice-1' was revoked at 2026-11-25T12:00:00+00:00" == problem(at, now, ring)
    assert "" == problem(before, now, ring)


def test_a_signature_made_before_the_key_expired_still_counts_when_read_later() -> None:
    ring = KeyRing.identities(identities(person(ALICE, not_after=T0)))
    signed = over_the_wire(ALICE.sign(approval(), signed_at=T0 - timedelta(minutes=5)))

    assert "" == problem(signed, T0 + timedelta(days=3), ring)
    assert "key 'alice-1' expired at 2026-11-25T12:00:00+00:00" == problem(
        ALICE.sign(approval(), signed_at=T0 + timedelta(seconds=1)), T0 + timedelta(days=3), ring
    )


def test_a_signature_before_the_keys_validity_does_not_count() -> None:
    ring = KeyRing.identities(identities(person(ALICE, not_before=T0)))

    early = ALICE.sign(approval(), signed_at=T0 - timedelta(seconds=1))

    assert "key 'alice-1' is valid from 2026-11-25T12:00:00+00:00 only" == problem(early, T0, ring)
    assert "" == problem(ALICE.sign(approval(), signed_at=T0), T0, ring)


def test_a_signature_dated_more_than_the_skew_ahead_of_the_clock_does_not_count() -> None:
    assert 300.0 == MAX_SKEW_S
    ahead = ALICE.sign(approval(), signed_at=T0 + timedelta(seconds=301))
    barely = ALICE.sign(approval(), signed_at=T0 + timedelta(seconds=300))

    assert problem(ahead).startswith("signed at 2026-11-25T12:05:01+00:00, more than 300 s ahead")
    assert "" == problem(barely)


def test_identify_names_the_problem_and_is_not_verified() -> None:
    identity = RING.identify(BOB.sign(approval(by="alice"), signed_at=T0), T0)

    assert ("alice", False, "key 'bob-1' belongs to 'bob', not to 'alice'") == (
        identity.name,
        identity.verified,
        identity.problem,
    )


# ---- identities and trusted-keys files ------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "identities.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(path: Path, kind: str = "identities") -> str:
    with pytest.raises(SigningKeyError) as caught:
        KeyRing.load(path, kind)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_an_identities_file_loads_with_names_groups_and_validity(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "identities:\n"
        "  - name: alice\n"
        "    groups: [sre, ml-platform]\n"
        "    keys:\n"
        f"      - id: alice-1\n        public_key: {ALICE.public_text()}\n"
        "        not_after: 2026-12-31T00:00:00Z\n"
        "  - name: ci\n"
        f"    keys: [{{id: bob-1, public_key: '{BOB.public_text()}'}}]\n",
    )

    ring = KeyRing.load(path, "identities")

    assert {"alice-1": "alice", "bob-1": "ci"} == {k: v.owner for k, v in ring.keys.items()}
    alice = ring.keys["alice-1"]
    assert ("sre", "ml-platform") == alice.groups
    assert "2026-12-31T00:00:00+00:00" == (alice.not_after and alice.not_after.isoformat())


@pytest.mark.parametrize(
    ("key_line", "expected"),
    [
        (
            "public_key: not base64!",
            "{path}: key 'alice-1': public_key is not an Ed25519 public key in base64 (32 bytes)",
        ),
        (
            "public_key: QUJD",  # base64 of 3 bytes
            "{path}: key 'alice-1': public_key is not an Ed25519 public key in base64 (32 bytes)",
        ),
    ],
)
def test_a_public_key_that_is_not_one_is_one_sentence_naming_the_file_and_key(
    tmp_path: Path, key_line: str, expected: str
) -> None:
    text = f"identities:\n  - name: alice\n    keys:\n      - id: alice-1\n        {key_line}\n"
    path = write(tmp_path, text)

    message = load_error(path)

    assert message.startswith(expected.format(path=path)), message
    assert message.endswith("copy the line `rollout keys public` prints"), message


def test_a_key_id_registered_twice_is_one_sentence(tmp_path: Path) -> None:
    doc = identities(person(ALICE), person(SigningKey.generate("alice-1", "carol")))
    path = write(tmp_path, json.dumps(doc), "identities.json")

    message = load_error(path)

    assert (
        f"{path}: key id 'alice-1' is registered twice (alice and carol): key ids are unique, "
        "so generate one of the keys again with another --key-id"
    ) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("identities:\n  - name: alice\n", "{path}: identities.0.keys: Field required"),
        (
            "identities:\n  - name: alice\n    keys: []\n",
            "{path}: identities.0.keys: Tuple should have at least 1 item",
        ),
        (
            "identities:\n  - name: alice\n    keys: [{public_key: x}]\n",
            "{path}: identities.0.keys.0.id: Field required",
        ),
        ("identities:\n  - {name: alice, kyes: []}\n", "{path}: identities.0.keys: Field"),
        ("- alice\n", "{path}: expected a mapping with `identities:` at the top"),
        ("identities: [\n", "{path}:"),
    ],
)
def test_an_unusable_identities_file_is_one_sentence(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)

    message = load_error(path)

    assert message.startswith(expected.format(path=path)), message


def test_a_missing_identities_file_is_one_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert str(missing) in load_error(missing)


def test_a_trusted_keys_file_registers_every_key_to_the_controller(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"keys:\n  - id: c-1\n    public_key: {ALICE.public_text()}\n"
        f"  - id: c-2\n    public_key: {BOB.public_text()}\n    revoked_at: 2026-11-25T12:00:00Z\n",
        "controller-keys.yaml",
    )

    ring = KeyRing.load(path, "keys")

    assert {"c-1", "c-2"} == set(ring.keys)
    assert {"rollout-controller"} == {k.owner for k in ring.keys.values()}
    empty = write(tmp_path, "keys: []\n", "empty.yaml")
    assert f"{empty}: keys: Tuple should have at least 1 item" in load_error(empty, "keys")


def test_the_same_key_id_in_two_registered_keys_is_refused() -> None:
    key = RING.keys["alice-1"]
    twice = [key, RegisteredKey("alice-1", "bob", (), BOB.public)]

    with pytest.raises(SigningKeyError, match="key id 'alice-1' is registered twice"):
        KeyRing.of(twice)


# ---- private key files ----------------------------------------------------------------------


def test_a_saved_key_loads_back_and_signs_the_same(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    ALICE.save(path)

    loaded = SigningKey.load(path)

    assert ("alice-1", "alice", ALICE.public_text()) == (
        loaded.key_id,
        loaded.identity,
        loaded.public_text(),
    )
    assert ALICE.sign(approval(), signed_at=T0) == loaded.sign(approval(), signed_at=T0)
    assert 0o600 == stat.S_IMODE(path.stat().st_mode)


def test_saving_never_overwrites_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    ALICE.save(path)
    before = path.read_bytes()

    with pytest.raises(FileExistsError):
        BOB.save(path)

    assert before == path.read_bytes()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json at all", "{path} is not a key file (JSON with key_id, identity and private_key"),
        ("[1, 2]", "{path} is not a key file: it needs key_id, identity and private_key"),
        ('{"key_id": "a-1", "identity": "a"}', "{path} is not a key file: it needs key_id"),
        (
            '{"key_id": "a-1", "identity": "a", "private_key": "QUJD"}',
            "{path} is not a key file: it needs key_id",
        ),
        (
            '{"key_id": "a-1", "identity": "a", "private_key": "%%%"}',
            "{path} is not a key file: it needs key_id",
        ),
    ],
)
def test_an_unusable_key_file_is_one_sentence(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "alice.key"
    path.write_text(text)

    with pytest.raises(SigningKeyError) as caught:
        SigningKey.load(path)

    message = str(caught.value)
    assert message.startswith(expected.format(path=path)), message
    assert "\n" not in message


def test_a_missing_key_file_is_one_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"

    with pytest.raises(SigningKeyError, match=r"cannot read the key file .*nope\.key"):
        SigningKey.load(missing)
