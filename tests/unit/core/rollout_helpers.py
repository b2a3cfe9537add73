"""A rollout driven by literal predictions and events, with the clock in the test's hands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import schemas as s
from controller.core.policy import Policy
from controller.core.rollout import Result, RolloutState, Served, apply, evaluate, observe
from tests.factories import T0, make_deployment

START = T0.timestamp()

#: A small policy: the error-rate test alone, with small step gates.
UNIT_POLICY: dict[str, Any] = {
    "name": "unit",
    "significance": {"alpha": 0.01},
    "steps": {"min_samples": 50, "min_bake_s": 10},
    "deadline": {"after_s": 3600},
    "alerts": {"runbook_url": "https://runbooks.example/{kind}"},
    "rules": [{"name": "errors", "detector": "error_rate", "params": {"min_samples": 20}}],
    # a step's share tests start where the step starts (tests of the settle window set it)
    "evaluation": {"settle_s": 0.0},
}


def unit_policy(**overrides: Any) -> Policy:
    evaluation = {**UNIT_POLICY["evaluation"], **overrides.pop("evaluation", {})}
    return Policy.from_mapping({**UNIT_POLICY, **overrides, "evaluation": evaluation})


def three_steps(**overrides: Any) -> s.RolloutPlan:
    """10 %, 50 %, 100 %: each bakes 10 s and needs 50 canary requests, except the last."""
    fields: dict[str, Any] = {
        "steps": (
            s.TrafficStep(canary_percent=10, min_bake_s=10, min_samples=50),
            s.TrafficStep(canary_percent=50, min_bake_s=10, min_samples=50),
            s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
        ),
        "deadline_s": 3600.0,
    }
    fields.update(overrides)
    return s.RolloutPlan(**fields)


def deployment(**plan_overrides: Any) -> s.DeploymentRequested:
    return make_deployment(plan=three_steps(**plan_overrides), training_profile=None)


class Rollout:
    """One rollout: send it events and traffic, read what it decided."""

    def __init__(
        self,
        request: s.DeploymentRequested | None = None,
        policy: Policy | None = None,
        start: float = START,
        *,
        router_acks: bool = True,
    ) -> None:
        self.policy = policy or unit_policy()
        self.now = start
        self.steps: list[Result] = []
        #: Like a router: each set_traffic is acknowledged as applied the moment it is issued
        #: (an acknowledgement's result is recorded after the step that issued the command).
        self.router_acks = router_acks
        first = self._record(
            apply(None, request or deployment(), self.policy, self.now, event_id="deploy")
        )
        assert first.state is not None
        self.state: RolloutState = first.state

    def _record(self, step: Result) -> Result:
        self.steps.append(step)
        if step.state is not None:
            self.state = step.state
        if self.router_acks:
            for command in step.commands:
                if command.action is s.CommandAction.SET_TRAFFIC:
                    self.acknowledge(command)
        return step

    def acknowledge(self, command: s.Command, applied_at: float | None = None) -> Result:
        """The router's traffic.applied for `command`, applied at `applied_at` (now)."""
        ack = s.TrafficApplied(
            deployment_id=command.deployment_id,
            command_id=command.command_id,
            canary_percent=command.canary_percent,
            applied_by="router",
            applied_at=datetime.fromtimestamp(self.now if applied_at is None else applied_at, UTC),
        )
        self.steps.append(step := apply(self.state, ack, self.policy, self.now))
        if step.state is not None:
            self.state = step.state
        return step

    # ---- driving ---------------------------------------------------------------------

    def send(self, payload: s.Payload, event_id: str | None = None) -> Result:
        return self._record(apply(self.state, payload, self.policy, self.now, event_id))

    def wait(self, seconds: float) -> None:
        self.now += seconds

    def tick(self) -> Result:
        return self._record(evaluate(self.state, self.policy, self.now))

    def serve(
        self,
        seconds: int = 1,
        *,
        canary: int = 10,
        baseline: int = 10,
        canary_errors: int = 0,
        latency_ms: float = 100.0,
        canary_version: str = "v2",
    ) -> None:
        """Each second: `canary` and `baseline` requests (the first `canary_errors` of the
        canary's failing), then one evaluation."""
        for _ in range(seconds):
            self.now += 1.0
            items = [
                Served(
                    "canary",
                    canary_version,
                    i >= canary_errors,
                    latency_ms,
                    self.now,
                    None if i >= canary_errors else "timeout",
                )
                for i in range(canary)
            ] + [Served("baseline", "v1", True, latency_ms, self.now) for _ in range(baseline)]
            observe(self.state, items, self.now)
            self.tick()

    def serve_until(self, phase: str, limit_s: int = 600, **kw: Any) -> None:
        for _ in range(limit_s):
            if self.state.phase == phase:
                return
            self.serve(**kw)
        raise AssertionError(f"still {self.state.phase} after {limit_s} s, wanted {phase}")

    # ---- reading ---------------------------------------------------------------------

    @property
    def commands(self) -> list[s.Command]:
        return [c for step in self.steps for c in step.commands]

    @property
    def decisions(self) -> list[s.Decision]:
        return [d for step in self.steps for d in step.decisions]

    @property
    def alerts(self) -> list[s.Alert]:
        return [a for step in self.steps for a in step.alerts]

    def actions(self) -> list[tuple[str, float]]:
        return [(c.action.value, c.canary_percent) for c in self.commands]

    def phases(self) -> list[tuple[str, str]]:
        return [(d.from_phase, d.to_phase) for d in self.decisions]
