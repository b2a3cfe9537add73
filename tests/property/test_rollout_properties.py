"""Invariants of the rollout state machine under arbitrary sequences of events.

People press buttons in any order, routers acknowledge late, events are redelivered, the canary
fails or goes silent, time jumps: whatever happens, a terminal phase never changes (but a
promoted model may be rolled back, once), a rollout issues at most one terminal command (and
a rollback after its promote), every output has a reason, the same inputs give the same
outputs, and the state survives a trip through plain JSON without changing a decision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas as s
from controller.core.phases import TRANSITIONS, Phase
from controller.core.policy import Policy
from controller.core.rollout import Result, RolloutState, Served, apply, evaluate, observe
from tests.factories import make_deployment
from tests.unit.core.rollout_helpers import START, UNIT_POLICY, three_steps

POLICY = Policy.from_mapping(
    {
        **UNIT_POLICY,
        "rules": [
            {"name": "errors", "detector": "error_rate", "params": {"min_samples": 20}},
            {
                "name": "silence",
                "detector": "outage",
                "params": {"min_gap_s": 5},
                "no_data": "pass",
            },
            {"name": "errors_watch", "detector": "error_rate", "dry_run": True},
        ],
    }
)

# ---- the inputs -----------------------------------------------------------------------------

serve = st.tuples(
    st.just("serve"), st.integers(1, 15), st.integers(0, 10), st.sampled_from([0] * 8 + [1, 5])
)  # seconds, canary requests per second, failing among them
wait = st.tuples(st.just("wait"), st.integers(1, 300))
person = st.tuples(
    st.sampled_from(["approve"] * 4 + ["pause", "resume"] * 2 + ["deny", "abort", "rollback"]),
    st.integers(0, 2),  # the step of an approval or a denial
)
acknowledge = st.tuples(st.just("applied"), st.integers(0, 5), st.integers(-5, 30))
usage = st.tuples(st.just("usage"), st.integers(0, 120))
replay = st.tuples(st.just("replay"), st.integers(0, 50))
ACTION = st.one_of(serve, serve, serve, serve, wait, person, acknowledge, usage, replay)

PLAN = st.builds(
    lambda start, gate, deadline: three_steps(
        approval_to_start=start,
        steps=(
            s.TrafficStep(canary_percent=10, min_bake_s=10, min_samples=50),
            s.TrafficStep(canary_percent=50, min_bake_s=10, min_samples=50, requires_approval=gate),
            s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
        ),
        deadline_s=deadline,
    ),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, 120.0, 1800.0]),
)


def person_event(kind: str, step: int) -> s.Payload:
    who: dict[str, Any] = {"by": "someone", "deployment_id": "dep-1"}
    if kind == "approve":
        return s.ApprovalGranted(step=step, **who)
    if kind == "deny":
        return s.ApprovalDenied(step=step, **who)
    return {
        "pause": s.PauseRequested,
        "resume": s.ResumeRequested,
        "abort": s.AbortRequested,
        "rollback": s.RollbackRequested,
    }[kind](**who)


@dataclass
class Run:
    """What one sequence produced."""

    steps: list[Result] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    state: RolloutState | None = None

    def outputs(self) -> list[Any]:
        return [o.model_dump(mode="json") for step in self.steps for o in step.outputs]

    @property
    def commands(self) -> list[s.Command]:
        return [c for step in self.steps for c in step.commands]

    @property
    def decisions(self) -> list[s.Decision]:
        return [d for step in self.steps for d in step.decisions]


def play(plan: s.RolloutPlan, actions: list[tuple[Any, ...]], restore_at: int | None = None) -> Run:
    """Apply the actions in order; at `restore_at`, continue from a JSON copy of the state."""
    run = Run()
    now = START
    first = apply(None, make_deployment(plan=plan, training_profile=None), POLICY, now, "dep")
    assert first.state is not None
    state = first.state
    run.steps.append(first)
    sent: list[tuple[str, s.Payload]] = []

    def send(payload: s.Payload, event_id: str) -> None:
        sent.append((event_id, payload))
        run.steps.append(apply(state, payload, POLICY, now, event_id))

    for i, action in enumerate(actions):
        if i == restore_at:
            state = RolloutState.from_dict(json.loads(json.dumps(state.to_dict())))
        kind = action[0]
        if kind == "serve":
            _, seconds, canary, failing = action
            for _ in range(seconds):
                now += 1.0
                items = [
                    Served("canary", "v2", j >= failing, 100.0, now, None if j >= failing else "x")
                    for j in range(canary)
                ] + [Served("baseline", "v1", True, 100.0, now)] * 10
                observe(state, items, now)
                run.steps.append(evaluate(state, POLICY, now))
        elif kind == "wait":
            now += action[1]
            run.steps.append(evaluate(state, POLICY, now))
        elif kind == "applied":
            commands = [c for step in run.steps for c in step.commands]
            if commands:
                command = commands[action[1] % len(commands)]
                when = command.issued_at.timestamp() + action[2]
                ack = s.TrafficApplied(
                    deployment_id="dep-1",
                    command_id=command.command_id,
                    canary_percent=command.canary_percent,
                    applied_by="router",
                    applied_at=datetime.fromtimestamp(when, UTC),
                )
                send(ack, f"ack-{i}")
        elif kind == "usage":
            send(
                s.ResourceUsage(deployment_id="dep-1", resource="gpu", used=action[1], limit=100),
                f"usage-{i}",
            )
        elif kind == "replay":
            if sent:
                event_id, payload = sent[action[1] % len(sent)]
                send(payload, event_id)
        else:
            payload = person_event(kind, action[1])
            send(payload, f"{kind}-{i}")
        run.phases.append(state.phase)
    run.state = state
    return run


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACTIONS = st.lists(ACTION, min_size=1, max_size=30)


@SETTINGS
@given(PLAN, ACTIONS)
def test_a_terminal_phase_never_changes(plan: s.RolloutPlan, actions: list[Any]) -> None:
    run = play(plan, actions)

    ended = [i for i, phase in enumerate(run.phases) if phase.is_terminal()]
    if ended:
        after = list(dict.fromkeys(run.phases[ended[0] :]))
        # the one way out: a person's rollback of the promoted model
        assert after in ([run.phases[ended[0]]], [Phase.PROMOTED, Phase.ROLLED_BACK])


@SETTINGS
@given(PLAN, ACTIONS)
def test_nothing_is_decided_after_the_end(plan: s.RolloutPlan, actions: list[Any]) -> None:
    run = play(plan, actions)

    ends = [
        i
        for i, step in enumerate(run.steps)
        if any(Phase(d.to_phase).is_terminal() for d in step.decisions)
    ]
    if ends:
        later = [step for step in run.steps[ends[0] + 1 :] if step.decisions or step.commands]
        # but a person's rollback of the promoted model, once
        assert [] == later or [("promoted", "rolled_back")] == [
            (d.from_phase, d.to_phase) for step in later for d in step.decisions
        ]
        assert [] == later or [(s.CommandAction.ROLLBACK,)] == [
            tuple(c.action for c in step.commands) for step in later
        ]


@SETTINGS
@given(PLAN, ACTIONS)
def test_a_rollout_issues_at_most_one_terminal_command(
    plan: s.RolloutPlan, actions: list[Any]
) -> None:
    run = play(plan, actions)

    terminal = [c.action.value for c in run.commands if c.action.is_terminal()]
    assert len(terminal) <= 1 or ["promote", "rollback"] == terminal  # a promoted model rolled back


@SETTINGS
@given(PLAN, ACTIONS)
def test_every_output_has_a_reason_and_an_id_of_its_own(
    plan: s.RolloutPlan, actions: list[Any]
) -> None:
    run = play(plan, actions)

    assert all(c.reason.strip() for c in run.commands)
    assert all(d.reason.strip() for d in run.decisions)
    decisions = [d.decision_id for d in run.decisions]
    assert len(decisions) == len(set(decisions))
    # a command sent again (its acknowledgement late) is the very same command
    by_id: dict[str, s.Command] = {}
    for c in run.commands:
        assert by_id.setdefault(c.command_id, c) == c
    assert not set(by_id) & set(decisions)


@SETTINGS
@given(PLAN, ACTIONS)
def test_every_decision_follows_the_transition_table(
    plan: s.RolloutPlan, actions: list[Any]
) -> None:
    run = play(plan, actions)

    for d in run.decisions:
        assert Phase(d.to_phase) in TRANSITIONS[Phase(d.from_phase)]


@SETTINGS
@given(PLAN, ACTIONS)
def test_the_same_inputs_give_the_same_outputs(plan: s.RolloutPlan, actions: list[Any]) -> None:
    first, second = play(plan, actions), play(plan, actions)

    assert first.outputs() == second.outputs()
    assert first.state == second.state


@SETTINGS
@given(PLAN, ACTIONS, st.integers(0, 25))
def test_a_state_restored_from_json_decides_exactly_as_the_original(
    plan: s.RolloutPlan, actions: list[Any], restore_at: int
) -> None:
    straight, restored = play(plan, actions), play(plan, actions, restore_at)

    assert straight.outputs() == restored.outputs()
    assert straight.state == restored.state
    assert straight.state is not None
    assert straight.state == RolloutState.from_dict(
        json.loads(json.dumps(straight.state.to_dict()))
    )
