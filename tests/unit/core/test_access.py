"""Who may act on a rollout: control events through an Engine that verifies signatures.

Real Ed25519 keys (the `cryptography` package), the real core; the clock is the test's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import schemas as s
from controller.core.access import Identity, refusal
from controller.engine import Effects, Engine
from controller.replay.replay import replay
from controller.security.signing import KeyRing, RegisteredKey, SigningKey
from tests.factories import make_deployment, make_event
from tests.unit.core.rollout_helpers import START, three_steps, unit_policy

ALICE = SigningKey.generate("alice-1", "alice")
BOB = SigningKey.generate("bob-1", "bob")
MALLORY = SigningKey.generate("mallory-1", "mallory")
CONTROLLER = SigningKey.generate("controller-1", "rollout-controller")


def ring(*extra: RegisteredKey) -> KeyRing:
    return KeyRing.of(
        [
            RegisteredKey("alice-1", "alice", ("sre",), ALICE.public),
            RegisteredKey("bob-1", "bob", ("release-managers",), BOB.public),
            RegisteredKey("mallory-1", "mallory", (), MALLORY.public),
            *extra,
        ]
    )


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class Controls:
    """A gated rollout in an engine that verifies control events."""

    def __init__(self, policy: dict[str, Any] | None = None, **request: Any) -> None:
        self.engine = Engine(unit_policy(**(policy or {})), identities=ring())
        self.now = START
        plan = three_steps(approval_to_start=True)
        unsigned = make_deployment(plan=plan, training_profile=None, **request)
        self.request = ALICE.sign(unsigned, signed_at=at(self.now))  # requested_by alice
        self.state = self.engine.on_event(None, make_event(self.request), self.now).state
        assert self.state is not None and self.state.phase.value == "awaiting_approval"
        self.records: list[Any] = []
        self.sent = 0

    def send(self, payload: s.Payload, key: SigningKey | None = None, dt: float = 1.0) -> Effects:
        self.now += dt
        if key is not None:
            payload = key.sign(payload, signed_at=at(self.now))
        self.sent += 1
        event = make_event(payload, id=f"evt-{self.sent}", time=at(self.now))
        effects = self.engine.on_event(self.state, event, self.now)
        self.state = effects.state
        self.records += effects.records
        return effects

    def outputs(self, effects: Effects, kind: type[s.Payload]) -> list[Any]:
        return [r.event.data for r in effects.records if isinstance(r.event.data, kind)]


def approve(by: str, step: int = 0) -> s.ApprovalGranted:
    return s.ApprovalGranted(deployment_id="dep-1", step=step, by=by, reason="ok")


def test_an_unsigned_approval_is_refused_with_an_alert_and_the_gate_stays_shut() -> None:
    c = Controls()

    effects = c.send(approve("alice"))

    assert effects.result.refusal == "approval by alice refused: not signed"
    assert not c.outputs(effects, s.Decision)
    [alert] = c.outputs(effects, s.Alert)
    assert (alert.kind, alert.status, alert.severity) == ("control", "firing", "warning")
    assert alert.dedup_key == "dep-1/control.refused"
    assert alert.evidence["problem"] == "not signed"
    assert c.state is not None and c.state.phase.value == "awaiting_approval"


def test_a_signed_approval_opens_the_gate_and_the_trail_names_the_verified_key() -> None:
    c = Controls()

    effects = c.send(approve("alice"), ALICE)

    assert effects.result.refusal == ""
    [decision] = c.outputs(effects, s.Decision)
    assert decision.to_phase == "progressing"
    assert decision.evidence["identity"] == {
        "name": "alice",
        "verified": True,
        "key_id": "alice-1",
        "groups": ["sre"],
    }
    assert decision.evidence["approval_key"] == "alice-1"
    assert c.state is not None and c.state.approval_keys == {0: "alice-1"}


def test_an_approval_signed_with_another_identitys_key_is_a_critical_forgery() -> None:
    c = Controls()

    effects = c.send(approve("alice"), MALLORY.__class__("mallory-1", "alice", MALLORY.key))

    assert "key 'mallory-1' belongs to 'mallory', not to 'alice'" in effects.result.refusal
    [alert] = c.outputs(effects, s.Alert)
    assert alert.severity == "critical"


def test_a_changed_approval_does_not_verify() -> None:
    c = Controls()
    signed = ALICE.sign(approve("alice", step=1), signed_at=at(START))
    changed = signed.model_copy(update={"step": 0})

    effects = c.send(changed)

    assert "the signature does not verify with key 'alice-1'" in effects.result.refusal
    assert c.outputs(effects, s.Alert)[0].severity == "critical"


def test_the_records_approvers_are_the_only_ones_who_may_open_their_gate() -> None:
    c = Controls(approvals=(s.RequiredApproval(step=0, by=("release-managers",)),))

    refused = c.send(approve("alice"), ALICE)
    admitted = c.send(approve("bob"), BOB)

    assert refused.result.refusal == (
        "approval by alice refused: not authorized (the deployment record's approvers of step "
        "0 allows release-managers; alice is in groups sre)"
    )
    assert admitted.result.refusal == ""
    assert [d.to_phase for d in c.outputs(admitted, s.Decision)] == ["progressing"]
    resolved = [a for a in c.outputs(admitted, s.Alert) if a.kind == "control"]
    assert [a.status for a in resolved] == ["resolved"]


def test_the_policys_access_lists_govern_manual_actions() -> None:
    c = Controls(policy={"access": {"pause": ["sre"], "abort": ["bob"]}})
    c.send(approve("bob"), BOB)

    by_bob = c.send(s.PauseRequested(deployment_id="dep-1", by="bob"), BOB)
    by_alice = c.send(s.PauseRequested(deployment_id="dep-1", by="alice"), ALICE)
    abort_by_alice = c.send(s.AbortRequested(deployment_id="dep-1", by="alice"), ALICE)

    assert "policy's access.pause allows sre" in by_bob.result.refusal
    assert by_alice.result.refusal == ""
    assert [d.to_phase for d in c.outputs(by_alice, s.Decision)] == ["paused"]
    assert "policy's access.abort allows bob" in abort_by_alice.result.refusal
    assert c.state is not None and c.state.phase.value == "paused"


def test_a_replayed_copy_of_a_signed_pause_does_not_pause_again() -> None:
    c = Controls()
    c.send(approve("alice"), ALICE)
    pause = ALICE.sign(s.PauseRequested(deployment_id="dep-1", by="alice"), at(c.now))
    c.send(pause)
    c.send(s.ResumeRequested(deployment_id="dep-1", by="alice"), ALICE)

    again = c.send(pause)  # the same signed payload, in a new envelope (a new event id)

    assert not again.records
    assert again.result.refusal == ""
    assert "applied before (a copy): ignored" in again.result.note
    assert c.state is not None and c.state.phase.value == "progressing"


def test_without_identities_nothing_is_verified_and_the_trail_is_as_before() -> None:
    engine = Engine(unit_policy())
    request = make_deployment(plan=three_steps(approval_to_start=True), training_profile=None)
    state = engine.on_event(None, make_event(request), START).state

    effects = engine.on_event(state, make_event(approve("anyone")), START + 1)

    [decision] = [r.event.data for r in effects.records if isinstance(r.event.data, s.Decision)]
    assert "identity" not in decision.evidence
    assert decision.evidence == {"approved_by": "anyone", "approval_reason": "ok"}


def test_an_unverified_identity_is_authorized_by_nothing() -> None:
    request = make_deployment(plan=three_steps(), training_profile=None)
    access = unit_policy().access
    nobody = Identity("alice", ("sre",))  # not verified, no problem: no identities file
    pause = s.PauseRequested(deployment_id="dep-1", by="alice")

    assert refusal(pause, nobody, request, access) == ""
    assert not nobody.matches(("*",))


def test_commands_are_signed_deterministically_with_the_controllers_key() -> None:
    def run() -> list[bytes]:
        engine = Engine(unit_policy(), command_key=CONTROLLER)
        request = make_deployment(plan=three_steps(), training_profile=None)
        effects = engine.on_event(None, make_event(request), START)
        abort = engine.on_event(
            effects.state, make_event(s.AbortRequested(deployment_id="dep-1", by="x")), START + 5
        )
        return [
            r.encode() for r in (*effects.records, *abort.records) if r.topic is s.Topic.COMMANDS
        ]

    first, second = run(), run()
    trusted = KeyRing.of(
        [RegisteredKey("controller-1", "rollout-controller", (), CONTROLLER.public)]
    )

    assert first == second and len(first) == 2
    for raw in first:
        command = s.decode(raw).data
        assert command.signature.key_id == "controller-1"
        assert command.signature.signed_at == command.issued_at
        assert trusted.check(command, command.issued_at) == (
            trusted.keys["controller-1"],
            "",
        )


def test_a_routers_refusal_fires_a_critical_alert_resolved_by_its_next_acknowledgement() -> None:
    engine = Engine(unit_policy())
    request = make_deployment(plan=three_steps(), training_profile=None)
    started = engine.on_event(None, make_event(request), START)
    [command] = [r.event.data for r in started.records if r.topic is s.Topic.COMMANDS]
    refused = s.CommandRefused(
        deployment_id="dep-1",
        command_id=command.command_id,
        refused_by="router-a",
        reason="signature: not signed",
        refused_at=at(START + 1),
    )

    fired = engine.on_event(started.state, make_event(refused), START + 1)
    acked = engine.on_event(
        fired.state,
        make_event(
            s.TrafficApplied(
                deployment_id="dep-1",
                command_id=command.command_id,
                canary_percent=command.canary_percent,
                applied_by="router-a",
                applied_at=at(START + 2),
            )
        ),
        START + 2,
    )

    [alert] = [r.event.data for r in fired.records if isinstance(r.event.data, s.Alert)]
    assert (alert.kind, alert.severity, alert.status) == ("router", "critical", "firing")
    assert "router router-a refused command" in alert.summary
    statuses = [
        r.event.data.status
        for r in acked.records
        if isinstance(r.event.data, s.Alert) and r.event.data.dedup_key == alert.dedup_key
    ]
    assert statuses == ["resolved"]


def test_replay_with_the_workers_identities_refuses_what_the_worker_refused() -> None:
    t0 = at(START)
    request = ALICE.sign(
        make_deployment(plan=three_steps(approval_to_start=True), training_profile=None), t0
    )
    events = [
        make_event(request, time=t0),
        make_event(approve("alice"), time=t0 + timedelta(seconds=1), id="evt-1"),
        make_event(
            ALICE.sign(approve("alice"), t0 + timedelta(seconds=2)),
            time=t0 + timedelta(seconds=2),
            id="evt-2",
        ),
    ]
    lines = [e.to_json() for e in events]

    def outputs(**signing: Any) -> list[s.Envelope[Any]]:
        got: list[s.Envelope[Any]] = []
        replay(lines, unit_policy(), emit=got.append, **signing)
        return got

    verified = outputs(identities=ring())
    open_ = outputs()

    kinds = [(e.data.kind, e.data.status) for e in verified if isinstance(e.data, s.Alert)]
    assert ("control", "firing") in kinds
    gate = [e.data for e in verified if isinstance(e.data, s.Decision)][-1]
    assert gate.evidence["identity"]["key_id"] == "alice-1"
    first_gate = [e.data for e in open_ if isinstance(e.data, s.Decision)][-1]
    assert "identity" not in first_gate.evidence  # without identities the unsigned one opened it
    assert [e.to_json() for e in outputs(identities=ring())] == [e.to_json() for e in verified]


@pytest.mark.parametrize(
    ("event", "action"),
    [
        (s.ResumeRequested(deployment_id="dep-1", by="alice"), "pause"),
        (s.RollbackRequested(deployment_id="dep-1", by="alice"), "rollback"),
        (s.ApprovalDenied(deployment_id="dep-1", step=0, by="alice"), "approve"),
    ],
)
def test_each_control_event_is_governed_by_its_access_list(event: Any, action: str) -> None:
    c = Controls(policy={"access": {action: ["nobody"]}})

    effects = c.send(event, ALICE)

    assert f"access.{action} allows nobody" in effects.result.refusal


def test_an_unsigned_deployment_request_starts_nothing() -> None:
    engine = Engine(unit_policy(), identities=ring())
    request = make_deployment(plan=three_steps(), training_profile=None)

    effects = engine.on_event(None, make_event(request), START)

    assert effects.state is None and not effects.records
    assert effects.result.refusal == "deployment request by alice refused: not signed"


def test_a_signed_deployment_request_starts_the_rollout_under_its_verified_requester() -> None:
    engine = Engine(unit_policy(), identities=ring())
    request = ALICE.sign(make_deployment(plan=three_steps(), training_profile=None), at(START))

    effects = engine.on_event(None, make_event(request), START)

    assert effects.state is not None and effects.result.refusal == ""
    decisions = [r.event.data for r in effects.records if isinstance(r.event.data, s.Decision)]
    assert decisions and all(d.evidence["identity"]["key_id"] == "alice-1" for d in decisions)


def test_the_policys_access_deploy_list_says_who_may_start_a_rollout() -> None:
    engine = Engine(unit_policy(access={"deploy": ["release-managers"]}), identities=ring())
    by_alice = ALICE.sign(make_deployment(plan=three_steps(), training_profile=None), at(START))
    by_bob = BOB.sign(
        make_deployment(plan=three_steps(), training_profile=None, requested_by="bob"), at(START)
    )

    refused = engine.on_event(None, make_event(by_alice), START)
    started = engine.on_event(None, make_event(by_bob), START)

    assert "policy's access.deploy allows release-managers" in refused.result.refusal
    assert refused.state is None
    assert started.state is not None and started.result.refusal == ""


def test_a_deployment_request_naming_someone_else_than_its_signer_is_refused() -> None:
    engine = Engine(unit_policy(), identities=ring())
    request = ALICE.sign(
        make_deployment(plan=three_steps(), training_profile=None, requested_by="bob"), at(START)
    )

    effects = engine.on_event(None, make_event(request), START)

    assert effects.state is None
    assert "key 'alice-1' belongs to 'alice', not to 'bob'" in effects.result.refusal
